"""Intake: landing exports into stage1np (folders, SFTP), reading landed CSV files, and ingesting them into
stage2."""
