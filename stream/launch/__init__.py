"""Starting the server: ``voxline serve``, its uvicorn settings, the ``--workers`` front, its placement and the worker intake."""
