-- Per school and week (Monday to Sunday): the students enrolled at some point of the week, and the week's
-- attendance events, absences and students absent. Facts of the unknown school (-1) are left out.
with weeks as (
    select distinct date_trunc('week', date)::date as week_start
    from {{ source('star', 'dim_date') }}
    where date_key <> -1
),

enrollments as (
    select st.student_pseudonym, sc.school_id, e."entryDate" as entry_date, e."exitWithdrawDate" as exit_date
    from {{ source('star', 'fact_enrollment') }} e
    join {{ ref('students') }} st on st.student_key = e.student_key
    join {{ ref('schools') }} sc on sc.school_key = e.school_key
    where e.school_key <> -1
),

enrolled as (
    select en.school_id, w.week_start, count(distinct en.student_pseudonym) as enrolled_students
    from enrollments en
    join weeks w on en.entry_date < w.week_start + 7 and (en.exit_date is null or en.exit_date >= w.week_start)
    group by en.school_id, w.week_start
),

attendance as (
    select
        sc.school_id,
        date_trunc('week', a."eventDate")::date as week_start,
        count(*) as attendance_events,
        count(*) filter (where a.is_absent) as absence_events,
        count(distinct st.student_pseudonym) filter (where a.is_absent) as students_absent
    from {{ source('star', 'fact_attendance') }} a
    join {{ ref('students') }} st on st.student_key = a.student_key
    join {{ ref('schools') }} sc on sc.school_key = a.school_key
    where a.school_key <> -1
    group by sc.school_id, date_trunc('week', a."eventDate")::date
),

current_schools as (
    select school_id, school_name from {{ ref('schools') }} where is_current and school_key <> -1
)

select
    md5(school_id::text || '/' || week_start::text) as school_week_id,
    school_id,
    cs.school_name,
    week_start,
    week_start + 6 as week_end,
    coalesce(enrolled_students, 0) as enrolled_students,
    coalesce(attendance_events, 0) as attendance_events,
    coalesce(absence_events, 0) as absence_events,
    coalesce(students_absent, 0) as students_absent,
    round(coalesce(students_absent, 0)::numeric / nullif(enrolled_students, 0), 4) as absence_rate
from enrolled
full join attendance using (school_id, week_start)
left join current_schools cs using (school_id)
