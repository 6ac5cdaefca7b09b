-- Every version of every school (SCD type 2), with plain column names; the unknown school (-1) included.
select
    school_key,
    "schoolId" as school_id,
    "nameOfInstitution" as school_name,
    "shortNameOfInstitution" as short_name,
    "schoolTypeDescriptor" as school_type,
    "localEducationAgencyId" as local_education_agency_id,
    valid_from,
    valid_to,
    is_current
from {{ source('star', 'dim_school') }}
