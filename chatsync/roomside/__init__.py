"""The room side in a database of its own: a copy of its mapped columns in the chat database
(``mirror``), moved there by binary COPY (``transfer``) and kept in line with the room database by
moving only the rooms that differ (``refresh``). With one database for both sides every function
here does nothing, and the statements read the room tables themselves."""
