"""The admin web app and its JSON API (management of secrets, keys, routes; queue monitoring)."""
