-- A fallback CA after repeated failures, and ACME Renewal Information (ARI)
-- polled for issued certificates.

-- Consecutive failed attempts of an order (reset when it succeeds): which
-- issuer the next attempt uses depends on it.
ALTER TABLE certificate_orders ADD COLUMN failures integer NOT NULL DEFAULT 0;

-- The certificate's ARI identifier (RFC 9773 §4.1) and what the CA last
-- said about it. `renew_at` follows the suggested window.
ALTER TABLE certificates ADD COLUMN ari_id text;
ALTER TABLE certificates ADD COLUMN ari_window_start timestamptz;
ALTER TABLE certificates ADD COLUMN ari_window_end timestamptz;
ALTER TABLE certificates ADD COLUMN ari_explanation_url text;
ALTER TABLE certificates ADD COLUMN ari_checked_at timestamptz;
ALTER TABLE certificates ADD COLUMN ari_next_check_at timestamptz;
CREATE INDEX certificates_ari_due ON certificates (ari_next_check_at) WHERE ari_id IS NOT NULL;
