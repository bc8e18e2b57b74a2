"""Client database internals: the record, the abstract base and the built-in backends.

Import from :mod:`hivemind_core.database`, which is the public surface. The
modules here are split so each reads in one sitting:

* :mod:`.record`: :class:`~.record.Client`, the record, and the access-key helpers;
* :mod:`.model`: :class:`~.model.ClientDatabase`, the contract of every backend;
* :mod:`.sqlite_db`: the default backend (one file, safe for hub + CLI processes);
* :mod:`.redis_db`: several hubs sharing one Redis server;
* :mod:`.json_db`: the reference's ``clients.json`` format, for import and export;
* :mod:`.migration`: copies between databases and the import of a reference ``clients.json``.
* :mod:`.private`: the database files are created 0600 in a 0700 folder.
"""
