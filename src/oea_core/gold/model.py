"""What the gold layer is made of: the Data Vault's hubs, links and satellites over the Ed-Fi stage2p
tables, declared once as frozen specs, and the names of the star's tables.

Every business key is a pseudonym (``studentUniqueId_pseudonym``) or a code that names no person
(``schoolId``, a section's natural key), so hash keys are computed over pseudonyms only. Hubs take
their keys from every table that mentions them, so no link is orphaned. Vault columns keep the
stage2p names for business keys and attributes.
"""

from __future__ import annotations

from dataclasses import dataclass

VAULT = "vault"  # stage3p/vault/<table>
STAR = "star"  # stage3p/star/<table>
GOLD_STAGE = "stage3p"
EDFI = "edfi"
CLEVER = "clever"
LOAD_TS = "load_ts"
RECORD_SOURCE = "record_source"
STUDENT_ID = "studentUniqueId_pseudonym"
CLEVER_STUDENT_ID = "sis_id_pseudonym"  # Clever's sis_id is Ed-Fi's studentUniqueId: one salt, one pseudonym


@dataclass(frozen=True)
class Hub:
    """A hub: one row per business key (``business_key`` columns), hashed into ``hash_key``."""

    table: str
    hash_key: str
    business_key: tuple[str, ...]

    @property
    def key_columns(self) -> tuple[str, ...]:
        """The source columns the hash key is computed over, in order."""
        return self.business_key


@dataclass(frozen=True)
class Link:
    """A link between hubs, one row per relationship; ``dependent`` keys (an entry date) tell apart
    relationships between the same hub keys."""

    table: str
    hash_key: str
    hubs: tuple[Hub, ...]
    dependent: tuple[str, ...] = ()

    @property
    def key_columns(self) -> tuple[str, ...]:
        """The source columns the link's hash key is computed over: each hub's business key, then ``dependent``."""
        return tuple(c for hub in self.hubs for c in hub.business_key) + self.dependent


@dataclass(frozen=True)
class Satellite:
    """Descriptive attributes of a hub or link (``(column, Spark type)``), one row per change."""

    table: str
    parent: Hub | Link
    attributes: tuple[tuple[str, str], ...]

    @property
    def attribute_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.attributes)


@dataclass(frozen=True)
class Load:
    """One vault table loaded from stage2p tables of ``source`` (hubs from several, in this order)."""

    target: Hub | Link | Satellite
    tables: tuple[str, ...]
    source: str = EDFI


HUB_STUDENT = Hub("hub_student", "student_hk", (STUDENT_ID,))
HUB_SCHOOL = Hub("hub_school", "school_hk", ("schoolId",))
HUB_SECTION = Hub("hub_section", "section_hk",
                  ("localCourseCode", "schoolId", "schoolYear", "sectionIdentifier", "sessionName"))
LINK_ENROLLMENT = Link("link_enrollment", "enrollment_hk", (HUB_STUDENT, HUB_SCHOOL), ("entryDate",))
LINK_SECTION_ENROLLMENT = Link("link_section_enrollment", "section_enrollment_hk", (HUB_STUDENT, HUB_SECTION),
                               ("beginDate",))
SAT_STUDENT_DEMOGRAPHICS = Satellite("sat_student_demographics", HUB_STUDENT, (
    ("birthSexDescriptor", "string"), ("birthCountryDescriptor", "string"),
    ("birthStateAbbreviationDescriptor", "string"), ("citizenshipStatusDescriptor", "string"),
    ("multipleBirthStatus", "boolean")))
SAT_SCHOOL = Satellite("sat_school", HUB_SCHOOL, (
    ("nameOfInstitution", "string"), ("shortNameOfInstitution", "string"), ("schoolTypeDescriptor", "string"),
    ("operationalStatusDescriptor", "string"), ("charterStatusDescriptor", "string"),
    ("localEducationAgencyId", "int")))
SAT_ENROLLMENT = Satellite("sat_enrollment", LINK_ENROLLMENT, (
    ("exitWithdrawDate", "date"), ("exitWithdrawTypeDescriptor", "string"), ("entryGradeLevelDescriptor", "string"),
    ("entryTypeDescriptor", "string"), ("primarySchool", "boolean"), ("schoolYear", "int")))

# In load order: hubs, then links, then satellites.
VAULT_LOADS: tuple[Load, ...] = (
    Load(HUB_STUDENT, ("students", "student_school_associations", "student_section_associations")),
    Load(HUB_SCHOOL, ("schools", "student_school_associations")),
    Load(HUB_SECTION, ("sections", "student_section_associations")),
    Load(LINK_ENROLLMENT, ("student_school_associations",)),
    Load(LINK_SECTION_ENROLLMENT, ("student_section_associations",)),
    Load(SAT_STUDENT_DEMOGRAPHICS, ("students",)),
    Load(SAT_SCHOOL, ("schools",)),
    Load(SAT_ENROLLMENT, ("student_school_associations",)),
)
VAULT_TABLES = tuple(load.target.table for load in VAULT_LOADS)

# The star schema's tables, in build order (dimensions first).
STAR_TABLES = ("dim_date", "dim_student", "dim_school", "dim_section", "fact_enrollment", "fact_attendance",
               "fact_digital_activity")
SECTION_ATTRIBUTES = (("sectionName", "string"), ("classroomIdentificationCode", "string"),
                      ("educationalEnvironmentDescriptor", "string"), ("availableCredits", "decimal(9,3)"))
