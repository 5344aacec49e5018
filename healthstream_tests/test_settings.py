"""Settings parsing and URI masking."""

import pytest

from healthstream_assets.settings import Settings, SettingsError, mask_uri


@pytest.mark.parametrize(
    ("uri", "masked"),
    [
        ("mongodb://app:S3cret@db.example:27017/health", "mongodb://app:***@db.example:27017/health"),
        ("mongodb+srv://app:S3cret@cluster.example/x?retryWrites=true", "mongodb+srv://app:***@cluster.example/x?retryWrites=true"),
        ("mongodb://app:p@ss@db.example:27017/", "mongodb://app:***@db.example:27017/"),
        ("http://app:S3cret@db.example", "http://app:***@db.example"),
        ("mongodb://127.0.0.1:27017/", "mongodb://127.0.0.1:27017/"),
    ],
)
def test_mask_uri_hides_password(uri, masked):
    assert mask_uri(uri) == masked


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MAX_BATCH_DOCS": "abc"}, "MAX_BATCH_DOCS must be an integer"),
        ({"MAX_BATCH_DOCS": "0"}, "MAX_BATCH_DOCS must be at least 1"),
        ({"SETTLE_SECONDS": "nan"}, "SETTLE_SECONDS must be a finite number"),
        ({"RETRY_BACKOFF_SECONDS": "inf"}, "RETRY_BACKOFF_SECONDS must be a finite number"),
        ({"EMBEDDED_MONGO_PORT": "99999"}, "EMBEDDED_MONGO_PORT must be a TCP port"),
        ({"MONGO_DB_NAME": "a.b"}, "MONGO_DB_NAME must not contain"),
        ({"RECONCILE_CRON": "every day"}, "RECONCILE_CRON must be a cron expression"),
    ],
)
def test_invalid_setting_named_in_error(env, message):
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_invalid_uri_error_masks_password():
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({"MONGO_URI": "http://app:S3cret@db.example"})

    assert "S3cret" not in str(raised.value)
    assert "MONGO_URI must start with mongodb://" in str(raised.value)


def test_defaults():
    settings = Settings.from_env({})

    assert settings.mongo_uri is None
    assert settings.mongo_db_name == "health_metrics"
    assert settings.lookback_days == 30
    assert settings.max_batch_docs == 5000
    assert settings.settle_seconds == 5.0
    assert settings.spark_master == "local[*]"
