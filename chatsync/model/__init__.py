"""What is compared: the rules (kinds, fields, allowed values), the mapping to the real tables, and
the SQL generated from both."""
