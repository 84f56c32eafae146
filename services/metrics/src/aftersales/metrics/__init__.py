"""The metrics service: KPIs from every stream, inspection reports, Prometheus business series."""
