"""The admin web console at ``/console``: server-rendered pages over ``app.services``."""
