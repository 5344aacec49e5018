"""Parquet storage for the Spark DataFrames passed between assets."""

from dagster import ConfigurableIOManager, InputContext, OutputContext, ResourceDependency
from dagster_pyspark import PySparkResource
from pyspark.sql import DataFrame


class ParquetIOManager(ConfigurableIOManager):
    """Store each asset's DataFrame as Parquet at `base_path/<asset key>`, overwriting the last run.

    `base_path` is a local folder by default and any path Spark can write (`s3a://`, `hdfs://`)
    for a cluster. Only one window runs at a time, so one copy per asset is enough.
    """

    pyspark: ResourceDependency[PySparkResource]
    base_path: str

    def _path(self, context: InputContext | OutputContext) -> str:
        return "/".join([self.base_path.rstrip("/"), *context.asset_key.path])

    def handle_output(self, context: OutputContext, obj: DataFrame) -> None:
        path = self._path(context)

        obj.write.mode("overwrite").parquet(path)

        row_count = self.pyspark.spark_session.read.parquet(path).count()
        context.add_output_metadata({"row_count": row_count, "path": path})

    def load_input(self, context: InputContext) -> DataFrame:
        return self.pyspark.spark_session.read.parquet(self._path(context))
