"""The core below every component: the data model, the feed registry, typed errors, time, the database base
and its migrations. It imports no component (`collectors`, `gateway`, `rules`) and not the app shell (`nakhon`);
the import-linter contract in pyproject.toml checks it."""
