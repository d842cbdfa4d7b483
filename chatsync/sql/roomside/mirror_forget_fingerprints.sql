-- Forget the copy's fingerprints of the rooms of a refreshed part (mirror_record_fingerprints
-- writes them again from the copy).
DELETE FROM {ops}.mirror_fingerprints
WHERE entity = %(entity)s AND room_id = {rooms}
