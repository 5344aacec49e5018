"""healthstream: Dagster and PySpark analytics over the health app's MongoDB metrics."""
