-- Every version of every student (SCD type 2), by pseudonym only; the unknown student (-1) included.
select
    student_key,
    "studentUniqueId_pseudonym" as student_pseudonym,
    "birthSexDescriptor" as birth_sex,
    valid_from,
    valid_to,
    is_current
from {{ source('star', 'dim_student') }}
