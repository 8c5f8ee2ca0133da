"""Vectors: photos embedded by a submission bundle (``embed``), kept with the bundle's hash so a new model
re-embeds instead of mixing spaces (``reembed``), and searched exactly or through a faiss index beside the file
when the catalogue is large (``index``). Reads and writes the store through its methods (``records``)."""
