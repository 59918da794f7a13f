"""Fast checks of the local runtime's pure parts: the router's choice and the interval arithmetic."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from esteira.api.errors import InvalidSpec
from esteira.local.manifest import model_dir, parse_manifest
from esteira.local.provider import LocalMetricProvider, class_counts, increase, interval_sample, quantile
from esteira.local.split import NotServing, Split, choose, should_mirror
from esteira.local.stats import BUCKETS, ArmStats, Counters, exposition
from esteira.rollout.evidence import MetricsUnavailable


def test_weighted_choice_follows_the_weight() -> None:
    split = Split(stable=1, canary=2, weight=20)
    rng = random.Random(3)
    picks = [choose(split, rng.random()) for _ in range(10_000)]
    assert 0.18 < picks.count(2) / len(picks) < 0.22
    assert choose(split, 0.1999) == 2
    assert choose(split, 0.2) == 1


def test_no_canary_or_zero_weight_goes_to_stable() -> None:
    assert choose(Split(stable=1), 0.0) == 1
    assert choose(Split(stable=1, canary=2, weight=0), 0.0) == 1
    assert choose(Split(stable=1, canary=2, weight=100), 0.999) == 2


def test_header_pins_an_arm_whatever_the_weight() -> None:
    split = Split(stable=1, canary=2, weight=0)
    assert choose(split, 0.9, pinned="2") == 2
    assert choose(split, 0.0, pinned=" 1 ") == 1
    with pytest.raises(NotServing, match="revision '3' is not serving"):
        choose(split, 0.5, pinned="3")
    with pytest.raises(NotServing):
        choose(split, 0.5, pinned="latest")


def test_mirroring_copies_only_stable_traffic_when_a_canary_exists() -> None:
    split = Split(stable=1, canary=2, weight=50)
    assert should_mirror(split, 1, mirror=True)
    assert not should_mirror(split, 2, mirror=True)
    assert not should_mirror(split, 1, mirror=False)
    assert not should_mirror(Split(stable=1), 1, mirror=True)


def test_increase_treats_a_drop_as_a_restart() -> None:
    assert increase(10, 25) == 15
    assert increase(25, 4) == 4


def test_interval_sample_takes_the_growth_since_the_last_reading() -> None:
    before = Counters({"ok": 90, "server_error": 10}, (50.0, 50.0) + (0.0,) * (len(BUCKETS) - 1), {"0": 60, "1": 40})
    after = Counters(
        {"ok": 180, "server_error": 20, "client_error": 5},
        (100.0, 105.0) + (0.0,) * (len(BUCKETS) - 1),
        {"0": 100, "1": 40, "2": 30},
    )
    sample = interval_sample(before, after)
    assert sample.requests == 105
    assert sample.errors == 10
    assert dict(sample.class_counts) == {"0": 40, "2": 30}  # classes that did not grow are left out
    assert sample.latency_p95 is not None and 0.005 < sample.latency_p95 <= 0.01


def test_interval_sample_after_a_restart_counts_from_zero() -> None:
    before = Counters({"ok": 500}, (500.0,) + (0.0,) * len(BUCKETS), {"0": 500})
    after = Counters({"ok": 30}, (30.0,) + (0.0,) * len(BUCKETS), {"0": 30})
    sample = interval_sample(before, after)
    assert (sample.requests, dict(sample.class_counts)) == (30, {"0": 30})
    assert interval_sample(None, after).requests == 30


def test_classes_of_a_server_launched_again_count_whole_though_they_climbed_past_their_old_values() -> None:
    """The router's counters go on; the server's classes start again and may pass their old values between two
    readings: taken as grown, 40 of its 540 answers were counted, against the router's 540 requests."""
    bins = (0.0,) * (len(BUCKETS) + 1)
    before = Counters({"ok": 500}, bins, {"0": 500}, launch=1)
    after = Counters({"ok": 1040}, bins, {"0": 540}, launch=2)
    assert dict(interval_sample(before, after).class_counts) == {"0": 540}
    same = Counters({"ok": 1040}, bins, {"0": 540}, launch=1)
    assert dict(interval_sample(before, same).class_counts) == {"0": 40}


def counters_of(arms: dict[int, ArmStats], failing: set[int]) -> Callable[[int], Awaitable[Counters]]:
    """A reader of each arm's counters that times out for the revisions in ``failing``."""

    async def read(revision: int) -> Counters:
        if revision in failing:
            raise MetricsUnavailable(f"revision {revision}'s /metrics timed out")
        return arms[revision].counters()

    return read


def test_a_failed_reading_of_one_arm_moves_neither_arm_s_interval_on() -> None:
    """Both arms' counters are read before either interval begins: the canary's errors while the stable's metrics
    could not be read are judged at the next analysis."""
    arms = {1: ArmStats(), 2: ArmStats()}
    failing: set[int] = set()
    read = counters_of(arms, failing)

    async def scenario() -> None:
        provider = LocalMetricProvider(read)
        await provider.mark(1, 2)
        for _ in range(10):
            arms[2].observe(500, 0.01)
        for _ in range(90):
            arms[1].observe(200, 0.01)
        failing.add(1)
        with pytest.raises(MetricsUnavailable):
            await provider.collect("ns", "iris", None, 1, 2)  # type: ignore[arg-type]  # the spec is not read
        failing.clear()
        for _ in range(10):
            arms[2].observe(200, 0.01)
        evidence = await provider.collect("ns", "iris", None, 1, 2)  # type: ignore[arg-type]
        canary, stable = evidence.canary, evidence.stable
        assert canary is not None and stable is not None
        assert (canary.requests, canary.errors, stable.requests) == (20, 10, 90)

    asyncio.run(scenario())


def test_a_step_begun_while_the_counters_could_not_be_read_is_judged_only_on_its_own_traffic() -> None:
    """Hours at 10% behind a pauseBefore gate, then `promote` to 50% while the stable's metrics time out: from the
    last reading, the 50% step's errors were judged among those hours' requests and passed. The next analysis
    starts the interval instead (no evidence yet), and the one after judges the new step's traffic alone."""
    arms = {1: ArmStats(), 2: ArmStats()}
    failing: set[int] = set()
    read = counters_of(arms, failing)

    def serve(revision: int, status: int, count: int) -> None:
        for _ in range(count):
            arms[revision].observe(status, 0.01)

    async def scenario() -> None:
        provider = LocalMetricProvider(read)
        await provider.mark(1, 2)
        serve(2, 200, 2000)  # the 10% step, then hours at its gate
        serve(1, 200, 18000)
        failing.add(1)
        with pytest.raises(MetricsUnavailable):
            await provider.mark(1, 2)  # promote: the 50% step began
        failing.clear()
        serve(2, 500, 30)
        with pytest.raises(MetricsUnavailable, match="counting now"):
            await provider.collect("ns", "iris", None, 1, 2)  # type: ignore[arg-type]  # the spec is not read
        serve(2, 500, 30)
        serve(2, 200, 70)
        serve(1, 200, 100)
        evidence = await provider.collect("ns", "iris", None, 1, 2)  # type: ignore[arg-type]
        assert evidence.canary is not None and evidence.stable is not None
        assert (evidence.canary.requests, evidence.canary.errors, evidence.stable.requests) == (100, 30, 100)

    asyncio.run(scenario())


def test_quantile_interpolates_like_prometheus() -> None:
    buckets = (0.0, 10.0, 0.0, 0.0) + (0.0,) * (len(BUCKETS) - 3)
    assert quantile(0.5, buckets) == pytest.approx(0.0075)  # halfway through (0.005, 0.01]
    assert quantile(0.95, (0.0,) * (len(BUCKETS) + 1)) is None
    assert quantile(0.99, (0.0,) * len(BUCKETS) + (4.0,)) == BUCKETS[-1]


def test_class_counts_read_one_revision_from_torchserve_text() -> None:
    text = (
        "# TYPE esteira_predictions_total counter\n"
        'esteira_predictions_total{ModelName="iris",Revision="2",class="setosa",Hostname="h"} 12.0\n'
        'esteira_predictions_total{ModelName="iris",Revision="1",class="setosa",Hostname="h"} 99.0\n'
        'esteira_predictions_total{ModelName="iris",Revision="2",class="virginica",Hostname="h"} 3.0\n'
        'esteira_requests_total{ModelName="iris",Revision="2",outcome="ok",Hostname="h"} 15.0\n'
    )
    assert class_counts(text, 2) == {"setosa": 12.0, "virginica": 3.0}


def test_router_exposition_is_cumulative_per_revision() -> None:
    arm = ArmStats()
    arm.observe(200, 0.003)
    arm.observe(503, 0.2, mirrored=True)
    text = exposition("iris", {2: arm, 3: ArmStats()}, {2: 4})
    assert 'esteira_router_requests_total{ModelName="iris",Revision="2",outcome="server_error"} 1' in text
    assert 'esteira_router_request_duration_seconds_bucket{ModelName="iris",Revision="2",le="+Inf"} 2' in text
    assert 'esteira_router_mirrored_total{ModelName="iris",Revision="2"} 1' in text
    lines = text.splitlines()  # held requests whose callers left: counted where the router holds any, else none
    assert 'esteira_abandoned_requests_total{ModelName="iris",Revision="2"} 4' in lines
    assert 'esteira_abandoned_requests_total{ModelName="iris",Revision="3"} 0' in lines


def test_manifest_accepts_a_relative_folder(tmp_path: Path) -> None:
    folder = tmp_path / "models" / "iris"
    (folder / "config").mkdir(parents=True)
    (folder / "config" / "config.properties").write_text("model_store=/mnt/models/model-store\n")
    text = "apiVersion: serving.esteira.io/v1alpha1\nkind: ModelDeployment\nmetadata: {name: demo}\nspec: {model: {name: iris, version: '1', storageUri: models/iris}}\n"
    manifest = parse_manifest(text, tmp_path)
    assert manifest.name == "demo"
    assert model_dir(manifest.spec.model.storage_uri) == folder
    with pytest.raises(ValueError, match=r"no config/config\.properties"):
        parse_manifest(text.replace("models/iris", "models/none"), tmp_path)
    with pytest.raises(ValueError, match="needs a folder path"):
        model_dir("s3://bucket/iris")


def test_a_manifest_s_every_problem_is_reported_at_once_the_folder_s_too(tmp_path: Path) -> None:
    """A spec the rules refuse was reported alone, and the missing folder only once that was mended."""
    text = (
        "apiVersion: serving.esteira.io/v1alpha1\nkind: ModelDeployment\nmetadata: {name: demo}\n"
        "spec: {model: {name: iris, version: '1', storageUri: models/none}, batching: {maxBatchSize: 0}}\n"
    )
    with pytest.raises(InvalidSpec) as refused:
        parse_manifest(text, tmp_path)
    paths = [problem.path for problem in refused.value.problems]
    assert paths == ["spec.batching.maxBatchSize", "spec.model.storageUri"], refused.value
    assert "no config/config.properties" in str(refused.value)


def test_a_model_folder_cannot_turn_the_model_api_or_token_auth_back_on(tmp_path: Path) -> None:
    from esteira.api.spec import ModelDeploymentSpec
    from esteira.local.server import Ports, local_config
    from esteira.packaging.config import parse_properties

    hostile = (
        "model_store=/mnt/models/model-store\nenable_model_api=true\ndisable_token_authorization=false\n"
        "install_py_dep_per_model=true\nmanagement_address=http://0.0.0.0:8081\n"
        'model_snapshot={"name": "startup.cfg", "models": {"iris": {"1": {"marName": "iris.mar"}}}}\n'
    )
    spec = ModelDeploymentSpec.parse({"model": {"name": "iris", "version": "1", "storageUri": "file:///m"}})
    properties = parse_properties(local_config(hostile, spec, tmp_path, Ports(1, 2, 3, 4, 5)))
    assert properties["enable_model_api"] == "false"
    assert properties["disable_token_authorization"] == "true"
    assert properties["install_py_dep_per_model"] == "false"
    assert properties["management_address"] == "http://127.0.0.1:2"


def test_esteira_up_gives_torchserve_a_jvm_with_its_full_compiler_unless_told_otherwise(tmp_path: Path) -> None:
    """The C1-only quick start gives up the optimising compiler for good: it is for tests, not the product."""
    from esteira.api.spec import ModelDeploymentSpec
    from esteira.local.server import DEFAULT_VMARGS, Ports, local_config
    from esteira.packaging.config import parse_properties

    spec = ModelDeploymentSpec.parse({"model": {"name": "iris", "version": "1", "storageUri": "file:///m"}})
    default = parse_properties(local_config("vmargs=-Xint\n", spec, tmp_path, Ports(1, 2, 3, 4, 5)))
    assert default["vmargs"] == DEFAULT_VMARGS
    assert "TieredStopAtLevel" not in DEFAULT_VMARGS
    chosen = parse_properties(local_config("", spec, tmp_path, Ports(1, 2, 3, 4, 5), "-Xmx256m"))
    assert chosen["vmargs"] == "-Xmx256m"


def test_how_a_model_server_ended_names_the_signal() -> None:
    import signal
    from types import SimpleNamespace

    from esteira.local.server import TorchServeServer

    server = TorchServeServer.__new__(TorchServeServer)
    for code, words in (
        (-signal.SIGKILL, "was killed by signal SIGKILL"),
        (0, "its Java frontend was killed or crashed"),
        (3, "exited with status 3"),
    ):
        server._process = SimpleNamespace(returncode=code)  # type: ignore[assignment]
        assert words in server.how_it_ended()
