"""Privacy by rule: the pseudonymization op of an Ed-Fi column the metadata CSV does not declare.

The metadata CSV overrides these rules column by column; everything else a district's Ed-Fi
holds (any Data Standard version, any extension) is refined under them:

- every ``…UniqueId`` is hashed (with a lookup in the person's own resource: ``students.studentUniqueId``);
- names, birth details, addresses, e-mails, telephone numbers, identification codes and
  documents, login ids are masked, wherever they appear;
- a string of unknown meaning in a resource that describes a person (the person's own resource,
  or one that names a person by ``…UniqueId``) is masked; so is its ``_ext``;
- a record ``id`` is hashed without a lookup where the resource describes a person;
- everything else (descriptors, codes, dates, numbers, scores and results, education organization and
  course keys) is kept.
"""

from __future__ import annotations

import re

from ..schema import PseudoOp

# A person's own resource and its unique id (Ed-Fi 4/5: parents became contacts; TPDM has candidates).
PERSON_RESOURCES = {"students": "studentUniqueId", "staffs": "staffUniqueId", "parents": "parentUniqueId",
                    "contacts": "contactUniqueId", "candidates": "candidateIdentifier"}
UNIQUE_ID = re.compile(r"UniqueId$")
MASKED = re.compile(
    r"(^|_)(first|middle|last|maiden|preferred\w*|given|family|other|full|nick)?(Name|Surname|name|surname)$"
    r"|[Ss]urname|[Gg]enerationCodeSuffix|[Pp]ersonalTitlePrefix|^birth|_birth|[Bb]irth(Date|City|Place|"
    r"InternationalProvince)|[Aa]ddress|[Ss]treetNumberName|[Aa]partmentRoomSuiteNumber|[Bb]uildingSiteNumber"
    r"|^city$|_city$|[Pp]ostalCode|[Ll]atitude|[Ll]ongitude|[Ee]lectronicMail|[Ee]mail|[Tt]elephone|[Pp]hone"
    r"|[Ii]dentificationCode$|[Ii]dentificationDocument|[Dd]ocumentTitle|[Ss]ocialSecurity|(^|_)ssn$"
    r"|[Pp]assport|[Vv]isa|[Ll]oginId|[Dd]ateEnteredUS|[Ii]dentificationNumber|[Tt]axId")
# Strings whose meaning is known and not an identity: keys, codes, descriptors, dates, titles, results.
KNOWN = re.compile(r"(Descriptor|Id|Identifier|Code|Date|Time|Year|Title|Type|Status|Indicator|_ordinal)$"
                   r"|(?i:result|score|grade|gradeEarned|credits?|points?|rank|percent\w*|level)$"
                   r"|^(id|namespace|codeValue|value)$|^_lastModifiedDate$")


def describes_person(resource: str, columns: set[str] | frozenset[str]) -> bool:
    """True for a person's own resource, and for a resource whose records name a person by ``…UniqueId``."""
    return resource in PERSON_RESOURCES or any(UNIQUE_ID.search(c) for c in columns)


def rule_op(resource: str, entity: str, column: str, sql_type: str, person: bool) -> PseudoOp:
    """The op for ``column`` of ``entity`` (an entity of ``resource``) when the metadata does not declare it.

    ``person`` says whether the resource describes a person (:func:`describes_person`).
    """
    if UNIQUE_ID.search(column) or (entity == resource and column == PERSON_RESOURCES.get(resource)):
        own = entity == resource and column == PERSON_RESOURCES.get(resource)
        return PseudoOp.HASH if own else PseudoOp.HASH_NO_LOOKUP
    if column == "id":
        if not person:
            return PseudoOp.NO_OP
        return PseudoOp.HASH if entity == resource and resource in PERSON_RESOURCES else PseudoOp.HASH_NO_LOOKUP
    if MASKED.search(column):
        return PseudoOp.MASK
    if person and (column == "_ext" or sql_type == "string" and not KNOWN.search(column)):
        return PseudoOp.MASK
    return PseudoOp.NO_OP
