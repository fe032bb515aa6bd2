-- The platform's MySQL/MariaDB schema: the data contract shared by the web app and the ops toolkit.
-- Source of truth for MySQL 8 / MariaDB 10.6+. InnoDB, utf8mb4, times in UTC, money in integer
-- minor units (*_minor). ops_lib/schema.py mirrors it (tests/test_schema.py proves they agree).
-- Columns beyond SPEC.md's fixed ones are the toolkit's own (claim columns, markers); they are
-- nullable or defaulted, so a writer naming only the fixed columns can insert a row.
--
-- Load:  mysql --default-character-set=utf8mb4 DB < schema.sql
--    or: python tools/manage_schema.py create --execute

SET NAMES utf8mb4 COLLATE utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS attendance_rollup_queue (
  institution_id BIGINT NOT NULL,
  attendance_date DATE NOT NULL,
  marked_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
  claimed_by VARCHAR(32),
  lease_expires_at DATETIME,
  available_at DATETIME,
  CONSTRAINT pk_attendance_rollup_queue PRIMARY KEY (institution_id, attendance_date),
  KEY ix_rollup_queue_due (available_at, marked_at),
  KEY ix_rollup_queue_lease (lease_expires_at)
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS attendance_rollups (
  institution_id BIGINT NOT NULL,
  attendance_date DATE NOT NULL,
  class_name VARCHAR(50) NOT NULL,
  present_count INTEGER NOT NULL DEFAULT 0,
  late_count INTEGER NOT NULL DEFAULT 0,
  absent_count INTEGER NOT NULL DEFAULT 0,
  enrolled_count INTEGER NOT NULL DEFAULT 0,
  updated_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
  CONSTRAINT pk_attendance_rollups PRIMARY KEY (institution_id, attendance_date, class_name),
  KEY ix_rollups_updated (updated_at)
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS attendance_scan_queue (
  id BIGINT NOT NULL AUTO_INCREMENT,
  institution_id BIGINT NOT NULL,
  card_uid VARCHAR(64) NOT NULL,
  device_serial VARCHAR(64),
  scanned_at DATETIME NOT NULL,
  status VARCHAR(16) NOT NULL DEFAULT 'pending',
  attempts INTEGER NOT NULL DEFAULT 0,
  created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
  processed_at DATETIME,
  error VARCHAR(500),
  claimed_by VARCHAR(32),
  lease_expires_at DATETIME,
  available_at DATETIME,
  scan_key VARCHAR(120),
  PRIMARY KEY (id),
  CONSTRAINT uq_scan_queue_scan_key UNIQUE (scan_key),
  KEY ix_scan_queue_due (status, available_at, created_at),
  KEY ix_scan_queue_finished (status, processed_at),
  KEY ix_scan_queue_lease (lease_expires_at),
  KEY ix_scan_queue_poll (status, id)
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS audit_logs (
  id BIGINT NOT NULL AUTO_INCREMENT,
  actor VARCHAR(100) NOT NULL,
  action VARCHAR(64) NOT NULL,
  entity_type VARCHAR(64) NOT NULL,
  entity_id VARCHAR(64),
  details JSON,
  created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
  PRIMARY KEY (id),
  KEY ix_audit_logs_created (created_at),
  KEY ix_audit_logs_entity (entity_type, entity_id)
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS audit_logs_archive (
  id BIGINT NOT NULL,
  actor VARCHAR(100) NOT NULL,
  action VARCHAR(64) NOT NULL,
  entity_type VARCHAR(64) NOT NULL,
  entity_id VARCHAR(64),
  details JSON,
  created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
  archived_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
  PRIMARY KEY (id),
  KEY ix_audit_logs_archive_created (created_at)
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_unicode_ci;

-- Jobs the web app defines (cron_jobs), run by the background worker's dbjobs stage; one row per
-- (job, slot) in cron_job_runs (the unique key is the claim of a slot: docs/db-jobs.md).
CREATE TABLE IF NOT EXISTS cron_jobs (
  id BIGINT NOT NULL AUTO_INCREMENT,
  name VARCHAR(200) NOT NULL,
  job_type VARCHAR(64) NOT NULL,
  user_id BIGINT,
  run_at DATETIME,
  interval_minutes INTEGER,
  is_active BOOL NOT NULL DEFAULT 1,
  last_run_at DATETIME,
  created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
  invalid_reason VARCHAR(255),
  attempts INTEGER NOT NULL DEFAULT 0,
  retry_at DATETIME,
  last_error VARCHAR(500),
  PRIMARY KEY (id),
  KEY ix_cron_jobs_active (is_active, id)
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS cron_job_runs (
  id BIGINT NOT NULL AUTO_INCREMENT,
  cron_job_id BIGINT NOT NULL,
  job_type VARCHAR(64) NOT NULL,
  slot_at DATETIME NOT NULL,
  last_slot_at DATETIME,
  status VARCHAR(16) NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  rows_affected INTEGER NOT NULL DEFAULT 0,
  run_id VARCHAR(32),
  error VARCHAR(500),
  created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
  finished_at DATETIME,
  PRIMARY KEY (id),
  CONSTRAINT uq_cron_job_runs_slot UNIQUE (cron_job_id, slot_at),
  KEY ix_cron_job_runs_finished (status, finished_at)
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS divisions (
  id BIGINT NOT NULL AUTO_INCREMENT,
  code VARCHAR(20) NOT NULL,
  name_en VARCHAR(150) NOT NULL,
  name_bn VARCHAR(150),
  is_active BOOL NOT NULL DEFAULT 1,
  updated_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
  PRIMARY KEY (id),
  CONSTRAINT uq_divisions_code UNIQUE (code)
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS guardian_snapshot_queue (
  guardian_id BIGINT NOT NULL,
  marked_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
  claimed_by VARCHAR(32),
  lease_expires_at DATETIME,
  available_at DATETIME,
  CONSTRAINT pk_guardian_snapshot_queue PRIMARY KEY (guardian_id),
  KEY ix_snapshot_queue_due (available_at, marked_at),
  KEY ix_snapshot_queue_lease (lease_expires_at)
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS guardian_snapshots (
  guardian_id BIGINT NOT NULL,
  payload JSON NOT NULL,
  generated_at DATETIME NOT NULL,
  CONSTRAINT pk_guardian_snapshots PRIMARY KEY (guardian_id)
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS guardians (
  id BIGINT NOT NULL AUTO_INCREMENT,
  name VARCHAR(200) NOT NULL,
  phone VARCHAR(32),
  email VARCHAR(255),
  created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
  PRIMARY KEY (id)
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS invoice_reminders (
  invoice_id BIGINT NOT NULL,
  step VARCHAR(16) NOT NULL,
  created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
  sent_at DATETIME,
  channel VARCHAR(32),
  run_id VARCHAR(32),
  CONSTRAINT pk_invoice_reminders PRIMARY KEY (invoice_id, step),
  KEY ix_invoice_reminders_run (run_id, invoice_id)
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS notifications (
  id BIGINT NOT NULL AUTO_INCREMENT,
  guardian_id BIGINT NOT NULL,
  student_id BIGINT,
  kind VARCHAR(32) NOT NULL,
  title VARCHAR(255) NOT NULL,
  body TEXT,
  data JSON,
  dedupe_key VARCHAR(191) NOT NULL,
  created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
  read_at DATETIME,
  fanout_status VARCHAR(16) NOT NULL DEFAULT 'pending',
  fanned_out_at DATETIME,
  claimed_by VARCHAR(32),
  lease_expires_at DATETIME,
  available_at DATETIME,
  PRIMARY KEY (id),
  CONSTRAINT uq_notifications_dedupe UNIQUE (dedupe_key),
  KEY ix_notifications_created (created_at),
  KEY ix_notifications_fanned_out (fanout_status, fanned_out_at),
  KEY ix_notifications_fanout (fanout_status, id),
  KEY ix_notifications_fanout_due (fanout_status, available_at, created_at),
  KEY ix_notifications_guardian (guardian_id, read_at)
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS notifications_archive (
  id BIGINT NOT NULL,
  guardian_id BIGINT NOT NULL,
  student_id BIGINT,
  kind VARCHAR(32) NOT NULL,
  title VARCHAR(255) NOT NULL,
  body TEXT,
  data JSON,
  dedupe_key VARCHAR(191) NOT NULL,
  created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
  read_at DATETIME,
  fanout_status VARCHAR(16) NOT NULL DEFAULT 'pending',
  fanned_out_at DATETIME,
  claimed_by VARCHAR(32),
  lease_expires_at DATETIME,
  available_at DATETIME,
  archived_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
  PRIMARY KEY (id),
  KEY ix_notifications_archive_created (created_at)
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS ops_job_runs (
  id BIGINT NOT NULL AUTO_INCREMENT,
  run_id VARCHAR(32) NOT NULL,
  tool VARCHAR(64) NOT NULL,
  host VARCHAR(255) NOT NULL,
  pid INTEGER NOT NULL,
  args TEXT,
  dry_run BOOL NOT NULL DEFAULT 1,
  started_at DATETIME NOT NULL,
  heartbeat_at DATETIME NOT NULL,
  finished_at DATETIME,
  status VARCHAR(16) NOT NULL DEFAULT 'running',
  stop_reason VARCHAR(255),
  counts TEXT,
  error TEXT,
  PRIMARY KEY (id),
  CONSTRAINT uq_ops_job_runs_run_id UNIQUE (run_id),
  KEY ix_ops_job_runs_freshness (tool, status, finished_at)
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS ops_export_watermarks (
  table_name VARCHAR(64) NOT NULL,
  watermark_at DATETIME,
  watermark_key VARCHAR(255),
  last_run_id VARCHAR(32),
  last_rows BIGINT,
  updated_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
  CONSTRAINT pk_ops_export_watermarks PRIMARY KEY (table_name)
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS payments_archive (
  id BIGINT NOT NULL,
  invoice_id BIGINT NOT NULL,
  amount_minor BIGINT NOT NULL,
  method VARCHAR(32),
  reference VARCHAR(100),
  status VARCHAR(16) NOT NULL DEFAULT 'pending',
  paid_at DATETIME,
  created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
  archived_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
  PRIMARY KEY (id),
  KEY ix_payments_archive_created (created_at)
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS password_reset_codes (
  id BIGINT NOT NULL AUTO_INCREMENT,
  user_id BIGINT NOT NULL,
  code_hash VARCHAR(255) NOT NULL,
  expires_at DATETIME NOT NULL,
  used_at DATETIME,
  created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
  PRIMARY KEY (id),
  KEY ix_password_reset_codes_expires (expires_at),
  KEY ix_password_reset_codes_user (user_id, expires_at)
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS pending_registrations (
  id BIGINT NOT NULL AUTO_INCREMENT,
  mobile VARCHAR(32) NOT NULL,
  name VARCHAR(200) NOT NULL,
  otp_hash VARCHAR(255) NOT NULL,
  expires_at DATETIME NOT NULL,
  status VARCHAR(16) NOT NULL DEFAULT 'pending',
  created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
  PRIMARY KEY (id),
  KEY ix_pending_registrations_expiry (status, expires_at),
  KEY ix_pending_registrations_mobile (mobile)
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS plans (
  id BIGINT NOT NULL AUTO_INCREMENT,
  name VARCHAR(100) NOT NULL,
  monthly_fee_minor BIGINT NOT NULL,
  currency VARCHAR(3) NOT NULL DEFAULT 'BDT',
  created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
  PRIMARY KEY (id)
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS report_email_queue (
  id BIGINT NOT NULL AUTO_INCREMENT,
  institution_id BIGINT NOT NULL,
  recipient VARCHAR(255) NOT NULL,
  report_type VARCHAR(64) NOT NULL,
  params JSON,
  status VARCHAR(16) NOT NULL DEFAULT 'pending',
  attempts INTEGER NOT NULL DEFAULT 0,
  created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
  sent_at DATETIME,
  error VARCHAR(500),
  finished_at DATETIME,
  claimed_by VARCHAR(32),
  lease_expires_at DATETIME,
  available_at DATETIME,
  PRIMARY KEY (id),
  KEY ix_report_email_due (status, available_at, created_at),
  KEY ix_report_email_finished (status, finished_at),
  KEY ix_report_email_lease (lease_expires_at),
  KEY ix_report_email_poll (status, id)
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS system_settings (
  name VARCHAR(100) NOT NULL,
  value TEXT,
  updated_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
  CONSTRAINT pk_system_settings PRIMARY KEY (name)
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS users (
  id BIGINT NOT NULL AUTO_INCREMENT,
  name VARCHAR(200) NOT NULL,
  mobile VARCHAR(32) NOT NULL,
  role VARCHAR(32) NOT NULL,
  is_active BOOL NOT NULL DEFAULT 1,
  created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
  PRIMARY KEY (id),
  CONSTRAINT uq_users_mobile UNIQUE (mobile)
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS user_sessions (
  id BIGINT NOT NULL AUTO_INCREMENT,
  user_id BIGINT NOT NULL,
  token_hash VARCHAR(255) NOT NULL,
  expires_at DATETIME NOT NULL,
  revoked_at DATETIME,
  created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
  PRIMARY KEY (id),
  CONSTRAINT uq_user_sessions_token UNIQUE (token_hash),
  KEY ix_user_sessions_expires (expires_at),
  KEY ix_user_sessions_user (user_id, expires_at)
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS districts (
  id BIGINT NOT NULL AUTO_INCREMENT,
  code VARCHAR(20) NOT NULL,
  division_id BIGINT NOT NULL,
  name_en VARCHAR(150) NOT NULL,
  name_bn VARCHAR(150),
  is_active BOOL NOT NULL DEFAULT 1,
  updated_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
  PRIMARY KEY (id),
  CONSTRAINT uq_districts_code UNIQUE (code),
  CONSTRAINT fk_districts_division FOREIGN KEY(division_id) REFERENCES divisions (id),
  KEY ix_districts_division (division_id)
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS institutions (
  id BIGINT NOT NULL AUTO_INCREMENT,
  name VARCHAR(200) NOT NULL,
  code VARCHAR(50) NOT NULL,
  timezone VARCHAR(64) NOT NULL DEFAULT 'Asia/Dhaka',
  access_state VARCHAR(16) NOT NULL DEFAULT 'active',
  plan_id BIGINT,
  billing_email VARCHAR(255),
  created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
  is_active BOOL NOT NULL DEFAULT 1,
  billing_exempt BOOL NOT NULL DEFAULT 0,
  late_after VARCHAR(5),
  PRIMARY KEY (id),
  CONSTRAINT uq_institutions_code UNIQUE (code),
  CONSTRAINT fk_institutions_plan FOREIGN KEY(plan_id) REFERENCES plans (id)
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS notification_devices (
  id BIGINT NOT NULL AUTO_INCREMENT,
  guardian_id BIGINT NOT NULL,
  token VARCHAR(255) NOT NULL,
  platform VARCHAR(16) NOT NULL DEFAULT 'android',
  is_active BOOL NOT NULL DEFAULT 1,
  last_seen_at DATETIME,
  created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
  deactivated_at DATETIME,
  deactivation_reason VARCHAR(255),
  PRIMARY KEY (id),
  CONSTRAINT uq_devices_token UNIQUE (token),
  CONSTRAINT fk_devices_guardian FOREIGN KEY(guardian_id) REFERENCES guardians (id),
  KEY ix_devices_guardian (guardian_id, is_active),
  KEY ix_devices_staleness (is_active, last_seen_at)
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS invoices (
  id BIGINT NOT NULL AUTO_INCREMENT,
  invoice_no VARCHAR(32) NOT NULL,
  kind VARCHAR(16) NOT NULL,
  institution_id BIGINT NOT NULL,
  student_id BIGINT,
  period_start DATE NOT NULL,
  period_end DATE NOT NULL,
  amount_minor BIGINT NOT NULL,
  currency VARCHAR(3) NOT NULL DEFAULT 'BDT',
  status VARCHAR(16) NOT NULL DEFAULT 'generated',
  issued_at DATETIME,
  due_date DATE,
  paid_at DATETIME,
  issue_key VARCHAR(100),
  created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
  updated_at DATETIME,
  issued_by_run VARCHAR(32),
  PRIMARY KEY (id),
  CONSTRAINT uq_invoices_no UNIQUE (invoice_no),
  CONSTRAINT uq_invoices_issue_key UNIQUE (issue_key),
  CONSTRAINT fk_invoices_institution FOREIGN KEY(institution_id) REFERENCES institutions (id),
  KEY ix_invoices_institution (institution_id, kind, status),
  KEY ix_invoices_status_due (status, due_date),
  KEY ix_invoices_student (student_id, status)
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS push_deliveries (
  id BIGINT NOT NULL AUTO_INCREMENT,
  notification_id BIGINT NOT NULL,
  device_id BIGINT NOT NULL,
  status VARCHAR(16) NOT NULL DEFAULT 'pending',
  attempts INTEGER NOT NULL DEFAULT 0,
  error_code VARCHAR(64),
  sent_at DATETIME,
  provider_message_id VARCHAR(255),
  error VARCHAR(500),
  created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
  finished_at DATETIME,
  claimed_by VARCHAR(32),
  lease_expires_at DATETIME,
  available_at DATETIME,
  PRIMARY KEY (id),
  CONSTRAINT uq_deliveries_notification_device UNIQUE (notification_id, device_id),
  CONSTRAINT fk_deliveries_device FOREIGN KEY(device_id) REFERENCES notification_devices (id),
  KEY ix_deliveries_due (status, available_at, created_at),
  KEY ix_deliveries_finished (status, finished_at),
  KEY ix_deliveries_lease (lease_expires_at),
  KEY ix_deliveries_poll (status, id)
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS students (
  id BIGINT NOT NULL AUTO_INCREMENT,
  institution_id BIGINT NOT NULL,
  name VARCHAR(200) NOT NULL,
  class_name VARCHAR(50) NOT NULL DEFAULT '',
  card_uid VARCHAR(64),
  monthly_fee_minor BIGINT,
  access_state VARCHAR(16) NOT NULL DEFAULT 'active',
  is_active BOOL NOT NULL DEFAULT 1,
  created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
  PRIMARY KEY (id),
  CONSTRAINT uq_students_card UNIQUE (institution_id, card_uid),
  CONSTRAINT fk_students_institution FOREIGN KEY(institution_id) REFERENCES institutions (id),
  KEY ix_students_roster (institution_id, is_active, class_name)
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS upazilas (
  id BIGINT NOT NULL AUTO_INCREMENT,
  code VARCHAR(20) NOT NULL,
  district_id BIGINT NOT NULL,
  name_en VARCHAR(150) NOT NULL,
  name_bn VARCHAR(150),
  is_active BOOL NOT NULL DEFAULT 1,
  updated_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
  PRIMARY KEY (id),
  CONSTRAINT uq_upazilas_code UNIQUE (code),
  CONSTRAINT fk_upazilas_district FOREIGN KEY(district_id) REFERENCES districts (id),
  KEY ix_upazilas_district (district_id)
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS attendance_records (
  id BIGINT NOT NULL AUTO_INCREMENT,
  institution_id BIGINT NOT NULL,
  student_id BIGINT NOT NULL,
  attendance_date DATE NOT NULL,
  first_scan_at DATETIME NOT NULL,
  last_scan_at DATETIME NOT NULL,
  scan_count INTEGER NOT NULL DEFAULT '1',
  status VARCHAR(16) NOT NULL DEFAULT 'present',
  is_archived BOOL NOT NULL DEFAULT 0,
  created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
  updated_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
  PRIMARY KEY (id),
  CONSTRAINT uq_records_student_day UNIQUE (student_id, attendance_date),
  CONSTRAINT fk_records_student FOREIGN KEY(student_id) REFERENCES students (id),
  KEY ix_records_archive (is_archived, attendance_date),
  KEY ix_records_institution_day (institution_id, attendance_date),
  KEY ix_records_updated (updated_at, id)
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS guardian_students (
  guardian_id BIGINT NOT NULL,
  student_id BIGINT NOT NULL,
  CONSTRAINT pk_guardian_students PRIMARY KEY (guardian_id, student_id),
  CONSTRAINT fk_gs_guardian FOREIGN KEY(guardian_id) REFERENCES guardians (id),
  CONSTRAINT fk_gs_student FOREIGN KEY(student_id) REFERENCES students (id),
  KEY ix_gs_student (student_id)
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS payments (
  id BIGINT NOT NULL AUTO_INCREMENT,
  invoice_id BIGINT NOT NULL,
  amount_minor BIGINT NOT NULL,
  method VARCHAR(32),
  reference VARCHAR(100),
  status VARCHAR(16) NOT NULL DEFAULT 'pending',
  paid_at DATETIME,
  created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
  PRIMARY KEY (id),
  CONSTRAINT fk_payments_invoice FOREIGN KEY(invoice_id) REFERENCES invoices (id),
  KEY ix_payments_created (created_at),
  KEY ix_payments_invoice (invoice_id, status)
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS unions (
  id BIGINT NOT NULL AUTO_INCREMENT,
  code VARCHAR(20) NOT NULL,
  upazila_id BIGINT NOT NULL,
  name_en VARCHAR(150) NOT NULL,
  name_bn VARCHAR(150),
  is_active BOOL NOT NULL DEFAULT 1,
  updated_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
  PRIMARY KEY (id),
  CONSTRAINT uq_unions_code UNIQUE (code),
  CONSTRAINT fk_unions_upazila FOREIGN KEY(upazila_id) REFERENCES upazilas (id),
  KEY ix_unions_upazila (upazila_id)
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_unicode_ci;

