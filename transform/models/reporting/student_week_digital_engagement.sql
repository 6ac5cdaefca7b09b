-- Per student (pseudonym) and week (Monday to Sunday): Clever activity, from both Clever reports. Rows of
-- students the district does not know (student -1) are left out; the school is the one most of the week's
-- rows name (null: not enrolled then).
select
    md5(st.student_pseudonym || '/' || date_trunc('week', a.date)::date::text) as student_week_id,
    st.student_pseudonym,
    date_trunc('week', a.date)::date as week_start,
    mode() within group (order by sc.school_id) as school_id,
    count(distinct a.date) filter (where a.activity_type = 'participation' and a.active) as active_days,
    coalesce(sum(a.num_logins), 0) as logins,
    coalesce(sum(a.num_resources_accessed), 0) as resources_accessed,
    coalesce(sum(a.num_access), 0) as resource_accesses,
    count(distinct a.resource_id) filter (where a.activity_type = 'resource_usage') as distinct_resources
from {{ source('star', 'fact_digital_activity') }} a
join {{ ref('students') }} st on st.student_key = a.student_key
left join {{ ref('schools') }} sc on sc.school_key = a.school_key and a.school_key <> -1
where a.student_key <> -1
group by st.student_pseudonym, date_trunc('week', a.date)::date
