"""Tests of the Fitbit import: parsing the real export, loading it into MongoDB, and malformed input.

Expected values are computed from the CSV files with pandas, independently of the parser. Small
exports written to tmp_path cover cases the real data lacks, such as two weight entries on one day.
The database tests use the `mongo_db` and `fitbit_dir` fixtures from conftest.py.
"""

import hashlib
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest
from bson import ObjectId

from healthstream_assets.contract import DEFAULT_GOALS
from healthstream_assets.fitbit import (
    FitbitDataError,
    fitbit_user_id,
    find_month_folders,
    load_fitbit,
    parse_fitbit_export,
)

EARLIER_MONTH = "mturkfitbit_3.12.16-4.11.16"
LATER_MONTH = "mturkfitbit_4.12.16-5.12.16"

ACTIVITY_HEADER = (
    "Id,ActivityDate,TotalSteps,TotalDistance,TrackerDistance,LoggedActivitiesDistance,"
    "VeryActiveDistance,ModeratelyActiveDistance,LightActiveDistance,SedentaryActiveDistance,"
    "VeryActiveMinutes,FairlyActiveMinutes,LightlyActiveMinutes,SedentaryMinutes,Calories"
)
SLEEP_HEADER = "Id,SleepDay,TotalSleepRecords,TotalMinutesAsleep,TotalTimeInBed"
WEIGHT_HEADER = "Id,Date,WeightKg,WeightPounds,Fat,BMI,IsManualReport,LogId"

LOAD_TIME = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=timezone.utc)
LOAD_TIME_MS = datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=timezone.utc)


class RecordingClock:
    """Clock that returns a fixed time and counts its calls."""

    def __init__(self, moment: datetime):
        self.moment = moment
        self.calls = 0

    def __call__(self) -> datetime:
        self.calls += 1
        return self.moment


def utc_midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc)


def read_activity(fitbit_dir: Path, month: str) -> pd.DataFrame:
    frame = pd.read_csv(fitbit_dir / month / "dailyActivity_merged.csv", dtype={"Id": str})
    frame["day"] = pd.to_datetime(frame["ActivityDate"], format="%m/%d/%Y").dt.date
    frame["non_wear"] = (frame["SedentaryMinutes"] == 1440) & (frame["TotalSteps"] == 0)
    return frame


def read_sleep(fitbit_dir: Path) -> pd.DataFrame:
    frame = pd.read_csv(fitbit_dir / LATER_MONTH / "sleepDay_merged.csv", dtype={"Id": str})
    frame["day"] = pd.to_datetime(frame["SleepDay"], format="%m/%d/%Y %I:%M:%S %p").dt.date
    return frame


def read_weight(fitbit_dir: Path, month: str) -> pd.DataFrame:
    frame = pd.read_csv(fitbit_dir / month / "weightLogInfo_merged.csv", dtype={"Id": str})
    logged_at = pd.to_datetime(frame["Date"], format="%m/%d/%Y %I:%M:%S %p")
    frame["day"] = logged_at.dt.date
    frame["time"] = logged_at.dt.time
    return frame


def find_day(export, fitbit_id: str, day: date):
    matches = [entry for entry in export.days if entry.fitbit_id == fitbit_id and entry.day == day]
    assert len(matches) == 1, f"expected one day for {fitbit_id} on {day}, found {len(matches)}"
    return matches[0]


def activity_line(fitbit_id: str, day: str, steps: int, sedentary: int = 600, calories: int = 2000) -> str:
    """Return a dailyActivity row with 1.5 km per 2000 steps, 10 very and 5 fairly active minutes."""

    distance = steps * 0.00075
    return f"{fitbit_id},{day},{steps},{distance},{distance},0,0,0,{distance},0,10,5,300,{sedentary},{calories}"


def write_month(
    root: Path,
    folder: str,
    activity: list[str] | None,
    sleep: list[str] | None = None,
    weight: list[str] | None = None,
    line_ending: str = "\n",
) -> Path:
    """Write a month folder with the given data lines. A None list leaves that file out."""

    path = root / folder
    path.mkdir(parents=True)
    files = {
        "dailyActivity_merged.csv": (ACTIVITY_HEADER, activity),
        "sleepDay_merged.csv": (SLEEP_HEADER, sleep),
        "weightLogInfo_merged.csv": (WEIGHT_HEADER, weight),
    }
    for name, (header, lines) in files.items():
        if lines is None:
            continue

        text = line_ending.join([header, *lines]) + line_ending
        (path / name).write_bytes(text.encode())

    return path


@pytest.fixture
def indexed_db(mongo_db):
    """Database with the unique `{userId: 1, date: 1}` index on healthmetrics.

    load_fitbit creates no index, because production code creates this one before loading.
    """

    mongo_db["healthmetrics"].create_index([("userId", 1), ("date", 1)], unique=True)
    return mongo_db


# --- Parsing the real export --------------------------------------------------------------------


def test_user_count_matches_activity_ids(fitbit_dir):
    export = parse_fitbit_export(fitbit_dir)

    earlier = read_activity(fitbit_dir, EARLIER_MONTH)
    later = read_activity(fitbit_dir, LATER_MONTH)
    expected_ids = set(earlier["Id"]) | set(later["Id"])

    assert set(export.fitbit_ids) == expected_ids
    assert len(export.fitbit_ids) == 35


def test_day_count_covers_every_source(fitbit_dir):
    export = parse_fitbit_export(fitbit_dir)

    keys = set()
    for month in (EARLIER_MONTH, LATER_MONTH):
        activity = read_activity(fitbit_dir, month)
        weight = read_weight(fitbit_dir, month)
        keys |= set(zip(activity["Id"], activity["day"]))
        keys |= set(zip(weight["Id"], weight["day"]))
    sleep = read_sleep(fitbit_dir)
    keys |= set(zip(sleep["Id"], sleep["day"]))

    assert {(day.fitbit_id, day.day) for day in export.days} == keys
    assert len(export.days) == 1373


def test_month_row_counts(fitbit_dir):
    export = parse_fitbit_export(fitbit_dir)
    earlier, later = export.months

    assert earlier.folder == EARLIER_MONTH
    assert later.folder == LATER_MONTH
    assert earlier.start == date(2016, 3, 12)
    assert later.start == date(2016, 4, 12)
    assert earlier.activity_rows == len(read_activity(fitbit_dir, EARLIER_MONTH))
    assert later.activity_rows == len(read_activity(fitbit_dir, LATER_MONTH))
    assert earlier.sleep_rows == 0
    assert later.sleep_rows == len(read_sleep(fitbit_dir))
    assert earlier.weight_rows == len(read_weight(fitbit_dir, EARLIER_MONTH))
    assert later.weight_rows == len(read_weight(fitbit_dir, LATER_MONTH))
    assert export.weight_entries == 100


def test_non_wear_days_have_no_activity(fitbit_dir):
    export = parse_fitbit_export(fitbit_dir)

    earlier = read_activity(fitbit_dir, EARLIER_MONTH)
    later = read_activity(fitbit_dir, LATER_MONTH)
    assert export.months[0].non_wear_rows == int(earlier["non_wear"].sum())
    assert export.months[1].non_wear_rows == int(later["non_wear"].sum())

    # A day stays non-wear only if no month has a worn activity row for it.
    both = pd.concat([earlier, later])
    worn = set(zip(both.loc[~both["non_wear"], "Id"], both.loc[~both["non_wear"], "day"]))
    non_wear = set(zip(both.loc[both["non_wear"], "Id"], both.loc[both["non_wear"], "day"])) - worn
    assert export.non_wear_days == len(non_wear)
    assert export.non_wear_days == 122

    for fitbit_id, day in non_wear:
        metrics = find_day(export, fitbit_id, day).metrics
        for key in ("steps", "distance", "calories", "activeMinutes"):
            assert metrics[key] is None, f"{fitbit_id} {day} {key} should be missing"


def test_sleep_duplicates_counted_once(fitbit_dir):
    export = parse_fitbit_export(fitbit_dir)
    sleep = read_sleep(fitbit_dir)

    assert int(sleep.duplicated().sum()) == 3
    assert export.duplicate_sleep_rows == 3
    assert export.months[1].duplicate_sleep_rows == 3


def test_sleep_hours_are_minutes_over_60(fitbit_dir):
    export = parse_fitbit_export(fitbit_dir)
    sleep = read_sleep(fitbit_dir).drop_duplicates()

    assert len(sleep) == 410
    for row in sleep.itertuples():
        metrics = find_day(export, row.Id, row.day).metrics
        assert metrics["sleepHours"] == row.TotalMinutesAsleep / 60


def test_weight_matches_last_entry(fitbit_dir):
    export = parse_fitbit_export(fitbit_dir)

    # 2016-04-12 appears in both months' weight logs with the same entries.
    weight = pd.concat([read_weight(fitbit_dir, month) for month in (EARLIER_MONTH, LATER_MONTH)])
    last_entries = weight.sort_values("time").groupby(["Id", "day"]).last()
    assert len(last_entries) == 98

    for (fitbit_id, day), row in last_entries.iterrows():
        metrics = find_day(export, fitbit_id, day).metrics
        assert metrics["weight"] == row["WeightKg"]


def test_padded_and_unpadded_dates(fitbit_dir):
    export = parse_fitbit_export(fitbit_dir)
    earlier = pd.read_csv(fitbit_dir / EARLIER_MONTH / "dailyActivity_merged.csv", dtype={"Id": str})

    worn = ~((earlier["SedentaryMinutes"] == 1440) & (earlier["TotalSteps"] == 0))

    for text, day in (("04/01/2016", date(2016, 4, 1)), ("3/13/2016", date(2016, 3, 13))):
        rows = earlier[(earlier["ActivityDate"] == text) & worn]
        assert len(rows) > 0, f"no worn row dated {text!r}"

        row = rows.iloc[0]
        version = find_day(export, row["Id"], day).versions[0]
        assert version.month_index == 0
        assert version.metrics["steps"] == row["TotalSteps"]


def test_april_9_before_april_12(fitbit_dir):
    export = parse_fitbit_export(fitbit_dir)
    days = [entry.day for entry in export.days if entry.fitbit_id == "1503960366"]

    assert days == sorted(days)
    assert days.index(date(2016, 4, 9)) < days.index(date(2016, 4, 12))
    assert sorted(["4/9/2016", "4/12/2016"]) == ["4/12/2016", "4/9/2016"]


def test_overlap_day_has_two_versions(fitbit_dir):
    export = parse_fitbit_export(fitbit_dir)
    day = find_day(export, "1503960366", date(2016, 4, 12))

    assert [version.month_index for version in day.versions] == [0, 1]
    assert day.versions[0].metrics["steps"] == 224
    assert day.versions[1].metrics["steps"] == 13162
    assert day.metrics["steps"] == 13162
    assert day.metrics["activeMinutes"] == 25 + 13


def test_fitbit_user_id_is_sha256_prefix():
    expected = ObjectId(hashlib.sha256(b"fitbit:1503960366").digest()[:12])

    assert fitbit_user_id("1503960366") == expected
    assert fitbit_user_id("1503960366") == fitbit_user_id("1503960366")
    assert fitbit_user_id("1503960366") != fitbit_user_id("1624580081")
    with pytest.raises(ValueError, match="invalid Fitbit Id"):
        fitbit_user_id(" 1503960366")


# --- Parsing small exports ----------------------------------------------------------------------


def test_month_order_by_start_date(tmp_path):
    # String order puts "mturkfitbit_10..." before "mturkfitbit_9...".
    write_month(
        tmp_path,
        "mturkfitbit_9.1.16-10.1.16",
        [activity_line("1", "9/30/2016", 100), activity_line("1", "10/1/2016", 200)],
        weight=["1,10/1/2016 8:00:00 AM,70.5,155.4,,22,True,1"],
    )
    write_month(
        tmp_path,
        "mturkfitbit_10.1.16-10.31.16",
        [activity_line("1", "10/1/2016", 5000)],
        line_ending="\r\n",
    )
    (tmp_path / "heartrate_samples").mkdir()

    folders = find_month_folders(tmp_path)
    export = parse_fitbit_export(tmp_path)
    day = find_day(export, "1", date(2016, 10, 1))

    assert [folder.start for folder in folders] == [date(2016, 9, 1), date(2016, 10, 1)]
    assert [month.folder for month in export.months] == [folder.path.name for folder in folders]
    assert day.metrics["steps"] == 5000
    assert day.metrics["weight"] == 70.5


def test_later_month_wins_per_metric(tmp_path):
    write_month(
        tmp_path,
        "mturkfitbit_3.12.16-4.12.16",
        [activity_line("7", "4/12/2016", 300)],
        weight=["7,4/12/2016 6:00:00 AM,80,176.4,,25,True,1"],
    )
    write_month(
        tmp_path,
        "mturkfitbit_4.12.16-5.12.16",
        [activity_line("7", "4/12/2016", 0, sedentary=1440, calories=0)],
        sleep=["7,4/12/2016 12:00:00 AM,1,450,470"],
    )

    day = find_day(parse_fitbit_export(tmp_path), "7", date(2016, 4, 12))

    # The later month's non-wear row has no steps, so the earlier month's steps stay.
    assert day.metrics["steps"] == 300
    assert day.metrics["weight"] == 80.0
    assert day.metrics["sleepHours"] == 7.5
    assert day.non_wear is False


def test_weight_last_entry_by_time(tmp_path):
    write_month(
        tmp_path,
        "mturkfitbit_4.12.16-5.12.16",
        [activity_line("3", "4/20/2016", 100)],
        weight=[
            "3,4/20/2016 1:05:00 PM,61.2,134.9,,21,True,1",
            "3,4/20/2016 11:30:00 PM,61.9,136.5,,21,True,2",
            "3,4/20/2016 11:30:00 AM,60.4,133.2,,21,True,3",
        ],
    )

    export = parse_fitbit_export(tmp_path)

    assert find_day(export, "3", date(2016, 4, 20)).metrics["weight"] == 61.9
    assert export.weight_entries == 3


def test_day_without_activity_kept(tmp_path):
    write_month(
        tmp_path,
        "mturkfitbit_4.12.16-5.12.16",
        [activity_line("5", "4/12/2016", 100)],
        sleep=["5,4/13/2016 12:00:00 AM,1,390,400"],
        weight=["5,4/14/2016 7:00:00 AM,90,198.4,,30,True,1"],
    )

    export = parse_fitbit_export(tmp_path)
    sleep_day = find_day(export, "5", date(2016, 4, 13))
    weight_day = find_day(export, "5", date(2016, 4, 14))

    assert sleep_day.metrics == {
        "steps": None,
        "distance": None,
        "calories": None,
        "activeMinutes": None,
        "sleepHours": 6.5,
        "weight": None,
    }
    assert weight_day.metrics["weight"] == 90.0
    assert weight_day.metrics["steps"] is None


def test_missing_activity_file_raises(tmp_path):
    write_month(tmp_path, "mturkfitbit_3.12.16-4.11.16", [activity_line("1", "3/12/2016", 10)])
    later = write_month(
        tmp_path,
        "mturkfitbit_4.12.16-5.12.16",
        None,
        sleep=["1,4/12/2016 12:00:00 AM,1,300,320"],
    )

    with pytest.raises(FileNotFoundError) as raised:
        parse_fitbit_export(tmp_path)

    assert isinstance(raised.value, FitbitDataError)
    assert str(later / "dailyActivity_merged.csv") in str(raised.value)


def test_missing_month_folders_raise(tmp_path):
    (tmp_path / "heartrate_samples").mkdir()

    with pytest.raises(FileNotFoundError, match="no month folder"):
        parse_fitbit_export(tmp_path)


def test_invalid_folder_name_raises(tmp_path):
    (tmp_path / "mturkfitbit_13.40.16-5.12.16").mkdir()

    with pytest.raises(FitbitDataError, match="mturkfitbit_13.40.16-5.12.16"):
        parse_fitbit_export(tmp_path)


@pytest.mark.parametrize(
    ("bad_line", "column", "value"),
    [
        (activity_line("1", "13/45/2016", 10), "ActivityDate", "13/45/2016"),
        (activity_line("1", "2016-04-13", 10), "ActivityDate", "2016-04-13"),
        (activity_line("1", "4/13/2016", 10).replace(",10,", ",ten,", 1), "TotalSteps", "ten"),
        (activity_line("1", "4/13/2016", -5), "TotalSteps", "-5"),
        (activity_line("1", "4/13/2016", 10).replace(",0.0075,", ",nan,", 1), "TotalDistance", "nan"),
        (activity_line("x1", "4/13/2016", 10), "Id", "x1"),
    ],
)
def test_malformed_activity_row_raises(tmp_path, bad_line, column, value):
    month = write_month(
        tmp_path,
        "mturkfitbit_4.12.16-5.12.16",
        [activity_line("1", "4/12/2016", 10), bad_line],
    )

    with pytest.raises(FitbitDataError) as raised:
        parse_fitbit_export(tmp_path)

    message = str(raised.value)
    assert f"{month / 'dailyActivity_merged.csv'}:3:" in message
    assert column in message
    assert repr(value) in message


def test_short_row_raises(tmp_path):
    month = write_month(tmp_path, "mturkfitbit_4.12.16-5.12.16", ["1,4/12/2016,10"])

    with pytest.raises(FitbitDataError, match="expected 15 fields") as raised:
        parse_fitbit_export(tmp_path)

    assert f"{month / 'dailyActivity_merged.csv'}:2:" in str(raised.value)


def test_malformed_weight_time_raises(tmp_path):
    write_month(
        tmp_path,
        "mturkfitbit_4.12.16-5.12.16",
        [activity_line("1", "4/12/2016", 10)],
        weight=["1,4/12/2016 25:00:00 PM,70,154.3,,22,True,1"],
    )

    with pytest.raises(FitbitDataError, match=r"weightLogInfo_merged.csv:2: invalid Date '4/12/2016 25:00:00 PM'"):
        parse_fitbit_export(tmp_path)


def test_conflicting_sleep_rows_raise(tmp_path):
    write_month(
        tmp_path,
        "mturkfitbit_4.12.16-5.12.16",
        [activity_line("1", "4/12/2016", 10)],
        sleep=["1,4/12/2016 12:00:00 AM,1,300,320", "1,4/12/2016 12:00:00 AM,1,310,320"],
    )

    with pytest.raises(FitbitDataError, match="sleepDay_merged.csv:3: .* differs from the row on line 2"):
        parse_fitbit_export(tmp_path)


# --- Loading into MongoDB -----------------------------------------------------------------------


def test_load_writes_every_day(indexed_db, fitbit_dir):
    clock = RecordingClock(LOAD_TIME)
    report = load_fitbit(fitbit_dir, indexed_db, clock=clock)
    healthmetrics = indexed_db["healthmetrics"]

    assert clock.calls == 1
    assert report.users == 35
    assert report.days == 1373
    assert report.documents_inserted == 1373
    assert report.documents_updated == 0
    assert report.documents_unchanged == 0
    assert report.non_wear_days == 122
    assert report.duplicate_sleep_rows == 3
    assert report.weight_entries == 100
    assert [month.activity_rows for month in report.months] == [457, 940]
    assert healthmetrics.count_documents({}) == 1373
    assert healthmetrics.count_documents({"source": "import"}) == 1373

    query = {"userId": fitbit_user_id("1503960366"), "date": utc_midnight(date(2016, 4, 13))}
    document = healthmetrics.find_one(query)
    assert isinstance(document["_id"], ObjectId)
    assert document["date"] == datetime(2016, 4, 13, tzinfo=timezone.utc)
    assert document["date"].utcoffset() == timedelta(0)
    assert document["metrics"]["steps"] == 10735
    assert document["metrics"]["sleepHours"] == 384 / 60
    assert document["createdAt"] == LOAD_TIME_MS + timedelta(milliseconds=1)
    assert document["updatedAt"] == LOAD_TIME_MS + timedelta(milliseconds=1)


def test_overlap_day_written_twice(indexed_db, fitbit_dir):
    load_fitbit(fitbit_dir, indexed_db, clock=RecordingClock(LOAD_TIME))

    document = indexed_db["healthmetrics"].find_one(
        {"userId": fitbit_user_id("1503960366"), "date": utc_midnight(date(2016, 4, 12))}
    )

    # The earlier month inserted the document at the load time and the later month updated it 1 ms later.
    assert document["metrics"]["steps"] == 13162
    assert document["createdAt"] == LOAD_TIME_MS
    assert document["updatedAt"] == LOAD_TIME_MS + timedelta(milliseconds=1)


def test_later_month_updates_earlier_load(indexed_db, fitbit_dir, tmp_path):
    earlier_only = tmp_path / "earlier_only"
    earlier_only.mkdir()
    (earlier_only / EARLIER_MONTH).symlink_to(fitbit_dir / EARLIER_MONTH)
    healthmetrics = indexed_db["healthmetrics"]
    query = {"userId": fitbit_user_id("1503960366"), "date": utc_midnight(date(2016, 4, 12))}

    first = load_fitbit(earlier_only, indexed_db, clock=RecordingClock(LOAD_TIME))
    assert first.documents_inserted == 457
    assert healthmetrics.find_one(query)["metrics"]["steps"] == 224

    later_time = LOAD_TIME + timedelta(hours=1)
    second = load_fitbit(fitbit_dir, indexed_db, clock=RecordingClock(later_time))
    document = healthmetrics.find_one(query)

    earlier = read_activity(fitbit_dir, EARLIER_MONTH)
    later = read_activity(fitbit_dir, LATER_MONTH)
    overlap = set(zip(earlier["Id"], earlier["day"])) & set(zip(later["Id"], later["day"]))
    assert len(overlap) == 24
    assert second.documents_updated == len(overlap)
    assert second.documents_inserted == 1373 - 457
    assert second.documents_unchanged == 457 - len(overlap)
    assert document["metrics"]["steps"] == 13162
    assert document["createdAt"] == LOAD_TIME_MS
    assert document["updatedAt"] == LOAD_TIME_MS + timedelta(hours=1, milliseconds=1)
    assert healthmetrics.count_documents({}) == 1373


def test_non_wear_day_stored_as_null(indexed_db, fitbit_dir):
    load_fitbit(fitbit_dir, indexed_db, clock=RecordingClock(LOAD_TIME))
    later = read_activity(fitbit_dir, LATER_MONTH)
    row = later[later["non_wear"]].iloc[0]

    document = indexed_db["healthmetrics"].find_one(
        {"userId": fitbit_user_id(row["Id"]), "date": utc_midnight(row["day"])}
    )

    for key in ("steps", "distance", "calories", "activeMinutes"):
        assert document["metrics"][key] is None, key


def test_second_load_changes_nothing(indexed_db, fitbit_dir):
    load_fitbit(fitbit_dir, indexed_db, clock=RecordingClock(LOAD_TIME))
    metrics_before = list(indexed_db["healthmetrics"].find({}).sort("_id"))
    users_before = list(indexed_db["users"].find({}).sort("_id"))

    report = load_fitbit(fitbit_dir, indexed_db, clock=RecordingClock(LOAD_TIME + timedelta(days=1)))

    assert report.documents_unchanged == 1373
    assert report.documents_inserted == 0
    assert report.documents_updated == 0
    assert report.write_operations == 0
    assert report.users_inserted == 0
    assert list(indexed_db["healthmetrics"].find({}).sort("_id")) == metrics_before
    assert list(indexed_db["users"].find({}).sort("_id")) == users_before


def test_users_get_default_goals(indexed_db, fitbit_dir):
    report = load_fitbit(fitbit_dir, indexed_db, clock=RecordingClock(LOAD_TIME))
    users = list(indexed_db["users"].find({}))

    assert report.users_inserted == 35
    assert len(users) == 35
    for user in users:
        assert isinstance(user["fitbitId"], str)
        assert user["_id"] == fitbit_user_id(user["fitbitId"])
        assert user["source"] == "import"
        assert user["goals"] == DEFAULT_GOALS
        assert user["createdAt"] == LOAD_TIME_MS
        assert user["updatedAt"] == LOAD_TIME_MS

    user_ids = set(indexed_db["healthmetrics"].distinct("userId"))
    assert user_ids == {user["_id"] for user in users}


def test_edited_goal_survives_reload(indexed_db, fitbit_dir):
    load_fitbit(fitbit_dir, indexed_db, clock=RecordingClock(LOAD_TIME))
    users = indexed_db["users"]
    user_id = fitbit_user_id("1503960366")
    users.update_one({"_id": user_id}, {"$set": {"goals.stepGoal": 12000}})
    # A user whose source was changed is written again, which repairs the source and keeps the goals.
    users.update_one(
        {"_id": fitbit_user_id("1624580081")},
        {"$set": {"source": "manual", "goals.sleepGoal": 7}},
    )

    load_fitbit(fitbit_dir, indexed_db, clock=RecordingClock(LOAD_TIME + timedelta(days=1)))
    edited = users.find_one({"_id": user_id})
    repaired = users.find_one({"_id": fitbit_user_id("1624580081")})

    assert edited["goals"]["stepGoal"] == 12000
    assert edited["updatedAt"] == LOAD_TIME_MS
    assert repaired["source"] == "import"
    assert repaired["goals"] == {**DEFAULT_GOALS, "sleepGoal": 7}
    assert repaired["updatedAt"] == LOAD_TIME_MS + timedelta(days=1)


def test_changed_document_restored(indexed_db, fitbit_dir):
    load_fitbit(fitbit_dir, indexed_db, clock=RecordingClock(LOAD_TIME))
    healthmetrics = indexed_db["healthmetrics"]
    query = {"userId": fitbit_user_id("1503960366"), "date": utc_midnight(date(2016, 4, 13))}
    healthmetrics.update_one(query, {"$set": {"metrics.steps": 1, "metrics.heartPoints": 5}})

    report = load_fitbit(fitbit_dir, indexed_db, clock=RecordingClock(LOAD_TIME + timedelta(days=1)))
    document = healthmetrics.find_one(query)

    assert report.documents_updated == 1
    assert report.documents_unchanged == 1372
    assert document["metrics"]["steps"] == 10735
    assert "heartPoints" not in document["metrics"]
    assert document["createdAt"] == LOAD_TIME_MS + timedelta(milliseconds=1)
    assert document["updatedAt"] == LOAD_TIME_MS + timedelta(days=1, milliseconds=1)


def test_many_changed_documents_rewritten(indexed_db, fitbit_dir):
    load_fitbit(fitbit_dir, indexed_db, clock=RecordingClock(LOAD_TIME))
    healthmetrics = indexed_db["healthmetrics"]
    fitbit_ids = ("1503960366", "1624580081", "1644430081", "1844505072")
    user_ids = [fitbit_user_id(fitbit_id) for fitbit_id in fitbit_ids]
    changed = {"userId": {"$in": user_ids}}
    healthmetrics.update_many(changed, {"$set": {"source": "manual"}})
    changed_count = healthmetrics.count_documents(changed)

    # FerretDB 1.24 deadlocks on an update command with about 100 statements that match
    # documents, so more than 100 changed documents check that the writes go in smaller batches.
    assert changed_count > 100

    report = load_fitbit(fitbit_dir, indexed_db, clock=RecordingClock(LOAD_TIME + timedelta(days=1)))

    assert report.documents_updated == changed_count
    assert report.documents_unchanged == 1373 - changed_count
    assert healthmetrics.count_documents({"source": "manual"}) == 0


def test_merged_metrics_stored(indexed_db, tmp_path):
    write_month(
        tmp_path,
        "mturkfitbit_3.12.16-4.12.16",
        [activity_line("7", "4/12/2016", 300)],
        weight=["7,4/12/2016 6:00:00 AM,80,176.4,,25,True,1"],
    )
    write_month(
        tmp_path,
        "mturkfitbit_4.12.16-5.12.16",
        [activity_line("7", "4/12/2016", 9000)],
        sleep=["7,4/12/2016 12:00:00 AM,1,450,470"],
    )

    report = load_fitbit(tmp_path, indexed_db, clock=RecordingClock(LOAD_TIME))
    document = indexed_db["healthmetrics"].find_one({"userId": fitbit_user_id("7")})

    assert report.days == 1
    assert report.write_operations == 2
    assert document["metrics"] == {
        "steps": 9000,
        "distance": 9000 * 0.00075,
        "calories": 2000,
        "activeMinutes": 15,
        "sleepHours": 7.5,
        "weight": 80.0,
    }
    assert document["createdAt"] == LOAD_TIME_MS
    assert document["updatedAt"] == LOAD_TIME_MS + timedelta(milliseconds=1)


def test_naive_clock_raises(mongo_db, fitbit_dir):
    with pytest.raises(ValueError, match="timezone-aware"):
        load_fitbit(fitbit_dir, mongo_db, clock=lambda: datetime(2024, 1, 1))
