"""Import and export: photos and identities from the tools users come from (Wild Me's COCO export,
``coco``; spreadsheets and tables, ``spreadsheet``; both through ``importing``, its crops ``crops`` and the
command ``import_cli``) and out again (``exporting``: plain tables, capture histories, and Wildbook's bulk-import
sheet, ``wildbook``). Reads the store (``records``) only."""
