"""Install PyTorch for the FERS networks into a folder of the QGIS profile, without root.

pip runs with QGIS's own Python interpreter and `--target` into a staging folder beside the final
one; the staging folder is moved into place only when pip succeeded and `import torch` works from
it, so a failed or cancelled install leaves no half-installed packages. The system Python and its
site-packages are never written. At start-up the plugin puts the folder on `sys.path` with
`activate()`.

The folder holds torch and its pure-Python dependencies at the versions torch needs (Debian 12's
sympy 1.11 is too old for torch's compiler stack), so it goes before the interpreter's
site-packages; packages that QGIS's Python owns and that its compiled modules depend on (numpy,
scipy, setuptools) are removed from it, so `import numpy` in QGIS still gives the system's numpy
and GDAL's gdal_array keeps working.
"""

import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

from .qgis_python import NO_WINDOW, find_python

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
CUDA_INDEX = "https://download.pytorch.org/whl/cu128"  # Windows: PyPI's Windows torch is CPU-only
DEFAULT_SPEC = "torch"
FOLDER_NAME = "fers-packages"
LOG_NAME = "install.log"
# Distributions QGIS's Python provides and its compiled modules are built against: a copy in the folder
# would shadow them (numpy 2 breaks GDAL's gdal_array and scipy on QGIS 3.22 to 3.28).
SYSTEM_OWNED = ("numpy", "scipy", "setuptools", "pkg_resources", "_distutils_hack", "distutils-precedence.pth")
# Environment variables that let a user point the installer at a mirror or pin a version.
SPEC_VARIABLE = "FERS_TORCH_SPEC"
INDEX_VARIABLE = "FERS_TORCH_INDEX_URL"  # an empty value means pip's configured index (pip.conf)
CHECK_SCRIPT = ("import sys; sys.path.insert(0, sys.argv[1]); import torch; "
                "x = torch.nn.functional.conv2d(torch.ones(1, 2, 5, 5), torch.ones(3, 2, 3, 3)); "
                "assert tuple(x.shape) == (1, 3, 3, 3); print(torch.__version__)")


def python_tag(version=None):
    major, minor = (version or sys.version_info)[:2]
    return f"python{major}.{minor}"


def packages_root(profile_dir) -> Path:
    """`<profile>/python/fers-packages`: the installer's folder (packages per Python version, the log)."""
    return Path(profile_dir) / "python" / FOLDER_NAME


def packages_folder(profile_dir, version=None) -> Path:
    """The folder torch goes into; one per Python version, so a QGIS upgrade never loads foreign binaries."""
    return packages_root(profile_dir) / python_tag(version)


def activate(folder, path: Optional[list] = None) -> bool:
    """Put `folder` on `path` (default sys.path) before the first site-packages entry, if it exists.

    Before site-packages because torch needs newer sympy/typing_extensions than Debian 12 ships;
    numpy and the other SYSTEM_OWNED packages are never in the folder, so the system's stay in use.
    Returns True when the folder is (now) on the path.
    """
    path = sys.path if path is None else path
    folder = str(folder)
    if not os.path.isdir(folder):
        return False
    if folder in path:
        return True
    position = next((i for i, entry in enumerate(path)
                     if os.path.basename(entry.rstrip("/\\")) in ("site-packages", "dist-packages")), len(path))
    path.insert(position, folder)
    import importlib

    importlib.invalidate_caches()
    return True


def nvidia_gpu_present(which=shutil.which, driver=Path("/proc/driver/nvidia")) -> bool:
    """An NVIDIA driver is installed: `nvidia-smi` on PATH or the Linux kernel driver's /proc entry."""
    return which("nvidia-smi") is not None or driver.exists()


@dataclass(frozen=True)
class InstallPlan:
    """What to install where, with which interpreter; `command()` is the pip command line.

    index_url None means pip's configured index (pip.conf, PIP_INDEX_URL); isolated ignores pip's
    configuration files and PIP_* variables, so only the given index is used.
    """

    python: str
    folder: Path
    spec: str = DEFAULT_SPEC
    index_url: Optional[str] = CPU_INDEX
    timeout_s: Optional[float] = None
    retries: Optional[int] = None
    isolated: bool = False
    extra_args: Tuple[str, ...] = field(default_factory=tuple)
    build: str = "CPU"  # what the user is told is installed: "CPU", "CUDA" or "from <index>"

    @property
    def root(self) -> Path:
        return Path(self.folder).parent

    @property
    def log_path(self) -> Path:
        return self.root / LOG_NAME

    def command(self, target) -> List[str]:
        command = [self.python, "-m", "pip", "install", "--target", str(target), "--no-input", "--progress-bar", "off",
                   "--disable-pip-version-check", "--no-warn-script-location", "--no-compile"]
        if self.index_url:
            command += ["--index-url", self.index_url]
        if self.timeout_s is not None:
            command += ["--timeout", f"{self.timeout_s:g}"]
        if self.retries is not None:
            command += ["--retries", str(self.retries)]
        return command + list(self.extra_args) + [self.spec]

    def environment(self, base=None) -> dict:
        environment = dict(os.environ if base is None else base)
        for name in ("PIP_USER", "PIP_REQUIRE_VIRTUALENV", "PIP_TARGET", "PIP_PREFIX", "PYTHONNOUSERSITE"):
            environment.pop(name, None)
        if self.isolated:
            for name in [n for n in environment if n.startswith("PIP_")]:
                del environment[name]
            environment["PIP_CONFIG_FILE"] = os.devnull
        environment["PIP_USER"] = "0"  # a user's `user = true` in pip.conf cannot be combined with --target
        environment["PYTHONUNBUFFERED"] = "1"
        return environment


def default_plan(profile_dir, python=None, gpu=None, system=None) -> InstallPlan:
    """The plan the plugin's offer runs: the CPU build, or the CUDA build when an NVIDIA GPU is present.

    FERS_TORCH_SPEC and FERS_TORCH_INDEX_URL (empty = pip's configured index) override the defaults,
    for a mirror or a pinned version.
    """
    system = platform.system() if system is None else system
    gpu = nvidia_gpu_present() if gpu is None else gpu
    if gpu and system == "Linux":
        index = None  # PyPI's Linux torch is the CUDA build
    elif gpu and system == "Windows":
        index = CUDA_INDEX
    else:
        index = CPU_INDEX  # macOS: the CPU index serves the (Metal-enabled) macOS wheels
    build = "CUDA" if gpu and system in ("Linux", "Windows") else "CPU"
    if INDEX_VARIABLE in os.environ:
        index = os.environ[INDEX_VARIABLE] or None
        build = f"from {index or 'the package index pip is configured with'}"
    return InstallPlan(python=python or find_python(), folder=packages_folder(profile_dir),
                       spec=os.environ.get(SPEC_VARIABLE) or DEFAULT_SPEC, index_url=index, build=build)


@dataclass(frozen=True)
class InstallResult:
    ok: bool
    message: str  # one sentence for the user: what happened, or why it failed and what to do
    folder: Path
    log_path: Path
    seconds: float
    version: Optional[str] = None


CONNECTION = re.compile(r"Failed to establish a new connection|Max retries exceeded|Connection refused|"
                        r"Name or service not known|Temporary failure in name resolution|ConnectTimeout|"
                        r"Read timed out|timed out|Network is unreachable|ProxyError|SSLError|CERTIFICATE_VERIFY",
                        re.I)


def index_problem(plan: InstallPlan) -> Optional[str]:
    """Why the plan's http(s) index cannot be read (pip with no retries says only 'from versions: none')."""
    if not (plan.index_url or "").startswith(("http://", "https://")):
        return None
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(plan.index_url.rstrip("/") + "/", timeout=plan.timeout_s or 15):
            return None
    except urllib.error.HTTPError as error:
        return None if error.code == 404 else f"HTTP {error.code}"  # a simple index may have no root page
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        return str(getattr(reason, "strerror", None) or reason)


def failure_reason(lines: Sequence[str], plan: InstallPlan) -> str:
    """One sentence saying why pip failed, from its output, and what to do."""
    text = "\n".join(lines)
    index = plan.index_url or "pip's configured package index"
    if re.search(r"No module named pip", text):
        return (f"pip is not installed for {plan.python}: install it (Debian/Ubuntu: the python3-pip package), "
                "then try again.")
    if re.search(r"No space left on device", text, re.I):
        return f"The disk holding {plan.root} is full (PyTorch needs about 1 GB there): free space and try again."
    if re.search(r"Permission denied|Errno 13", text):
        return f"{plan.root} cannot be written (permission denied): check the QGIS profile folder's permissions."
    if re.search(r"No matching distribution found|Could not find a version that satisfies", text):
        unreachable = "connection failed" if CONNECTION.search(text) else index_problem(plan)
        if unreachable:
            return (f"The package index {index} could not be reached ({unreachable}): check the network connection, "
                    "a proxy or a firewall, then try again.")
        return (f"{index} has no '{plan.spec}' for this Python ({python_tag()}) and platform "
                f"({platform.system()} {platform.machine()}): see pytorch.org for a supported combination.")
    if CONNECTION.search(text):
        return f"The package index {index} could not be reached: check the network connection and try again."
    errors = [line.strip() for line in lines if line.strip().startswith("ERROR:")]
    detail = errors[-1][len("ERROR:"):].strip() if errors else (lines[-1].strip() if lines else "no output")
    return f"pip failed: {detail}."


class PipProgress:
    """A rough percentage from pip's output lines: resolving and downloading, installing, checking."""

    def __init__(self):
        self.percent = 0.0

    def update(self, line: str) -> float:
        if line.startswith(("Collecting", "Processing", "Downloading", "Looking in", "Requirement")):
            self.percent = min(60.0, self.percent + (8.0 if self.percent < 10 else 4.0))
        elif line.startswith("Installing collected packages"):
            self.percent = 70.0
        elif line.startswith("Successfully installed"):
            self.percent = 90.0
        return self.percent


def run_logged(command, environment, log, on_line, is_cancelled) -> Tuple[int, List[str]]:
    """Run `command`, writing its output to `log` and passing each line to `on_line`; kills it on cancel.

    A watcher thread checks `is_cancelled` while pip is silent (a large download prints nothing).
    """
    lines = []
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               text=True, env=environment, bufsize=1, creationflags=NO_WINDOW)
    finished = threading.Event()

    def watch():
        while not finished.wait(0.2):
            if is_cancelled():
                process.kill()
                return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        for line in process.stdout:
            line = line.rstrip("\n")
            lines.append(line)
            log.write(line + "\n")
            log.flush()
            on_line(line)
    finally:
        process.stdout.close()
        returncode = process.wait()
        finished.set()
        watcher.join()
    return returncode, lines


def remove_system_owned(folder: Path, log) -> List[str]:
    """Delete SYSTEM_OWNED packages pip put into `folder` (their modules and .dist-info); their names."""
    removed = []
    for entry in sorted(Path(folder).iterdir()):
        stem = re.match(r"[A-Za-z0-9_]*", entry.name).group(0).lower()  # numpy, numpy.libs, numpy-1.26.dist-info
        if entry.name in SYSTEM_OWNED or stem in SYSTEM_OWNED:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
            removed.append(entry.name)
    if removed:
        log.write(f"Removed (QGIS's Python provides them): {', '.join(removed)}\n")
    return removed


def install(plan: InstallPlan, on_line: Callable[[str], None] = lambda line: None,
            on_progress: Callable[[float], None] = lambda percent: None,
            is_cancelled: Callable[[], bool] = lambda: False) -> InstallResult:
    """Run the plan: pip into a staging folder, checks, then move into place. Never raises for pip's failures."""
    start = time.monotonic()
    folder = Path(plan.folder)

    def result(ok, message, version=None):
        return InstallResult(ok, message, folder, plan.log_path, time.monotonic() - start, version)

    try:
        plan.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-staging-", dir=plan.root))
    except OSError as error:
        return result(False, f"{plan.root} cannot be created ({error.strerror or error}): check the QGIS profile "
                             "folder's permissions and free space.")
    progress = PipProgress()

    def line_seen(line):
        on_line(line)
        on_progress(progress.update(line))

    try:
        with open(plan.log_path, "w", encoding="utf-8") as log:
            command = plan.command(staging)
            log.write(f"FERS PyTorch install {time.strftime('%Y-%m-%d %H:%M:%S')}\n$ {' '.join(command)}\n")
            on_line(f"$ {' '.join(command)}")
            try:
                returncode, lines = run_logged(command, plan.environment(), log, line_seen, is_cancelled)
            except OSError as error:
                return result(False, f"{plan.python} could not be started ({error.strerror or error}).")
            if is_cancelled():
                return result(False, "The install was cancelled; nothing was installed.")
            if returncode != 0:
                reason = failure_reason(lines, plan)
                log.write(f"FAILED: {reason}\n")
                return result(False, reason)
            remove_system_owned(staging, log)
            on_progress(92.0)
            try:
                check = subprocess.run([plan.python, "-c", CHECK_SCRIPT, str(staging)], capture_output=True,
                                       text=True, timeout=300, env=plan.environment(), creationflags=NO_WINDOW)
            except subprocess.TimeoutExpired:
                return result(False, "PyTorch was downloaded but importing it took over 5 minutes; nothing was "
                                     "installed.")
            log.write(check.stdout + check.stderr)
            if check.returncode != 0:
                last = (check.stderr.strip().splitlines() or ["no output"])[-1]
                reason = f"PyTorch was downloaded but cannot be imported ({last}); nothing was installed."
                log.write(f"FAILED: {reason}\n")
                return result(False, reason)
            version = check.stdout.strip().splitlines()[-1]
            try:
                replace_folder(staging, folder)
            except OSError as error:  # Windows: the earlier install's DLLs are loaded by this QGIS
                return result(False, f"The earlier install in {folder} is in use ({error.strerror or error}): "
                                     "restart QGIS and install again.")
            message = f"PyTorch {version} is installed in {folder}."
            log.write(f"OK: {message}\n")
            on_progress(100.0)
            return result(True, message, version)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def replace_folder(staging: Path, folder: Path):
    """Move `staging` to `folder`, replacing an older install only once the new one is in place."""
    old = None
    if folder.exists():
        old = folder.with_name(f".{folder.name}-old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
    os.replace(staging, folder)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
