"""The store and its log: the catalogue's one SQLite file (``store.Catalogue``), its schema by version
(``schema``), every other statement it runs (``tables``), the append-only decision log and its replay into
identities (``decisions``, ``identity``), the photo tables and folders it reads and may serve (``photos``,
``test_labels``), every photo with its identity now (``current``), the check of a file against its folders (``check``), the errors all rooms raise (``errors``) and
the spreadsheet-safe text every writer of a table uses (``cells``). It imports no other room of the catalogue:
every SQL statement of the catalogue lives here."""
