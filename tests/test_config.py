"""config.toml: defaults, the template, and clear errors."""

from __future__ import annotations

import re
import tomllib

import click
import pytest

from capture_daemon.config import DEFAULT_CONFIG_TOML, CaptureSettings, ConfigError, load_config
from capture_daemon.quality import QualityRules, QualityWeights
from capture_daemon.signals import SignalRules


def write(home, text):
    home.mkdir(parents=True, exist_ok=True)
    path = home / "config.toml"
    path.write_text(text)
    return path


def test_missing_file_means_defaults(understudy_home):
    cfg = load_config()
    assert cfg.path == understudy_home / "config.toml"
    assert cfg.quality == QualityRules()
    assert cfg.signals == SignalRules()
    assert cfg.capture == CaptureSettings()
    assert (cfg.capture.idle_timeout_seconds, cfg.capture.exclude_projects, cfg.capture.target_accepted) == (1800, (), 500)


def test_values_from_every_section(understudy_home):
    write(understudy_home, """
[capture]
idle_timeout_seconds = 60
exclude_projects = ["~/secret", "/srv/*"]
target_accepted = 100
[quality]
min_score = 0.6
min_answer_words = 30
hard_rejects = ["incomplete", "no_answer"]
[quality.weights]
database = 0.3
[signals]
exploration_thorough = 7
""")
    cfg = load_config()
    assert cfg.capture.idle_timeout_seconds == 60 and cfg.capture.target_accepted == 100
    assert cfg.quality.min_score == 0.6 and cfg.quality.min_answer_words == 30
    assert cfg.quality.hard_rejects == ("incomplete", "no_answer")
    assert cfg.quality.weights.database == 0.3 and cfg.quality.weights.multi_step == 0.2
    assert cfg.signals.exploration_thorough == 7 and cfg.quality.signals is cfg.signals
    assert cfg.quality.min_tools == 3  # untouched keys keep their defaults


def test_default_template_loads_as_defaults(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(DEFAULT_CONFIG_TOML)
    assert load_config(path) == load_config(tmp_path / "missing.toml").model_copy(update={"path": path})


def test_default_template_lists_every_key_with_its_default(tmp_path):
    # Uncomment every "# key = value" line: the result must be valid and equal to the defaults.
    lines = []
    for line in DEFAULT_CONFIG_TOML.splitlines():
        m = re.match(r"^# ([a-z_]+ = .*)$", line)
        lines.append(re.sub(r"\s+#.*$", "", m.group(1)) if m else line)
    data = tomllib.loads("\n".join(lines))
    models = {"capture": CaptureSettings, "quality": QualityRules, "signals": SignalRules}
    for section, model in models.items():
        expected = {k for k in model.model_fields if k not in ("signals", "weights")}
        assert {k for k in data[section] if k != "weights"} == expected, section
    assert set(data["quality"]["weights"]) == set(QualityWeights.model_fields)
    path = tmp_path / "config.toml"
    path.write_text("\n".join(lines))
    cfg = load_config(path)
    assert cfg.quality == QualityRules() and cfg.signals == SignalRules() and cfg.capture == CaptureSettings()


@pytest.mark.parametrize("text,message", [
    ("[quality]\nmin_scor = 0.5\n", "unknown key 'min_scor' in [quality]; known keys: min_score, "),
    ("[quality.weights]\nmulti = 0.5\n", "unknown key 'multi' in [quality.weights]"),
    ("[signals]\nexploration = 1\n", "unknown key 'exploration' in [signals]"),
    ("[capture]\nidle = 1\n", "unknown key 'idle' in [capture]"),
    ("[quality]\nsignals = 1\n", "unknown key 'signals' in [quality]"),
    ("[qualty]\n", "unknown section [qualty]; known sections: [capture], [quality], [signals]"),
    ("min_score = 0.5\n", "key 'min_score' must go under [quality]"),
    ("[quality]\nmin_score = \"high\"\n", "[quality] min_score: Input should be a valid number (got 'high')"),
    ("[quality]\nmin_score = 2\n", "[quality] min_score: Input should be less than or equal to 1"),
    ("[quality]\nmin_answer_words = 40.5\n", "[quality] min_answer_words: Input should be a valid integer"),
    ("[quality]\nhard_rejects = [\"nope\"]\n", "[quality] hard_rejects: unknown rule 'nope'; choose from: incomplete"),
    ("[capture]\nexclude_projects = \"~/x\"\n", "[capture] exclude_projects:"),
    ("[signals]\nexploration_thorough = 2\n",
     "[signals]: exploration_thorough (2) must be greater than exploration_moderate (2)"),
])
def test_errors_name_the_file_and_the_key(understudy_home, text, message):
    path = write(understudy_home, text)
    with pytest.raises(ConfigError) as exc:
        load_config()
    msg = exc.value.format_message()
    assert msg.startswith(f"{path}: ")
    assert message in msg
    assert "\n" not in msg


def test_broken_toml_is_one_line_naming_file_and_line(understudy_home):
    path = write(understudy_home, "[quality]\nmin_score = 0.5\nfoo bar\n")
    with pytest.raises(ConfigError) as exc:
        load_config()
    msg = exc.value.format_message()
    assert msg.startswith(f"{path}: invalid TOML: ") and "line 3" in msg and "\n" not in msg


def test_config_error_is_a_click_exception():
    # So the CLI prints "Error: <message>" and never a traceback.
    assert issubclass(ConfigError, click.ClickException)


def test_explicit_path(tmp_path):
    path = tmp_path / "other.toml"
    path.write_text("[capture]\ntarget_accepted = 7\n")
    assert load_config(path).capture.target_accepted == 7
    assert load_config(str(path)).path == path


def test_exclude_projects_globs(isolated_env):
    cap = CaptureSettings(exclude_projects=["~/clients/*", "/srv/secret"])
    home = isolated_env.home
    assert cap.is_excluded(home / "clients" / "acme")
    assert cap.is_excluded(home / "clients" / "acme" / "sub" / "dir")
    assert cap.is_excluded("/srv/secret") and cap.is_excluded("/srv/secret/x")
    assert not cap.is_excluded("/srv/secrets")
    assert not cap.is_excluded(home / "work")
    assert not cap.is_excluded(None)
    assert not CaptureSettings().is_excluded("/anything")


def test_exclude_projects_sees_through_symlinks(tmp_path):
    """Claude Code reports a session started in a symlinked folder by its real path: excluding
    the link (or a glob through it) excludes the project, and excluding the real folder excludes
    a cwd written through the link."""
    real = tmp_path / "clients" / "acme"
    (real / "src").mkdir(parents=True)
    (tmp_path / "acme-link").symlink_to(real)
    (tmp_path / "clients-link").symlink_to(tmp_path / "clients")
    assert CaptureSettings(exclude_projects=[str(tmp_path / "acme-link")]).is_excluded(real / "src")
    assert CaptureSettings(exclude_projects=[str(tmp_path / "clients-link" / "*")]).is_excluded(real)
    assert CaptureSettings(exclude_projects=[str(real)]).is_excluded(tmp_path / "acme-link" / "src")
    assert not CaptureSettings(exclude_projects=[str(tmp_path / "acme-link")]).is_excluded(tmp_path / "clients")
    assert not CaptureSettings(exclude_projects=[str(tmp_path / "acme-link")]).is_excluded("/tmp/\x00bad")


def test_signal_thresholds_are_not_coerced_from_strings(understudy_home):
    write(understudy_home, '[signals]\nexploration_moderate = "2"\n')
    with pytest.raises(ConfigError, match=r"\[signals\] exploration_moderate: Input should be a valid integer"):
        load_config()
