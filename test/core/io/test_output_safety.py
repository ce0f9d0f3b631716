"""The engine's output safety: outputs that alias inputs or each other, output locations, temporaries unique to
their run (and cleaned after kills, signals and failures), and write failures (a full disk, a file-size limit)
turned into sentences."""

import os
import signal
import stat
import subprocess
import sys
import threading
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pytest

from fers.fers_core.errors import OutputError
from fers.fers_core.io import atomic
from fers.fers_core.io.output_safety import check_location, check_outputs
from fers.fers_core.io.windows import Window
from fers.fers_core.io.writer import RasterWriter
from fers.fers_core.runtime.run_guard import Interrupted, RunGuard

from ...conftest import read_only_folder
from ...rasters import write_cube
from .. import Log

ROOT = str(Path(__file__).resolve().parents[3])


def touch(path, content=b"input"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


# --- aliasing and duplicates -------------------------------------------------------------------------------------

def test_output_on_an_input_is_refused_however_it_is_spelled(tmp_path):
    scene = touch(tmp_path / "in" / "scene.tif")
    (tmp_path / "out").mkdir()
    os.link(scene, tmp_path / "hard.tif")
    os.symlink(scene, tmp_path / "link.tif")
    spellings = [scene, tmp_path / "out" / ".." / "in" / "." / "scene.tif", tmp_path / "hard.tif",
                 tmp_path / "link.tif"]
    for spelling in spellings:
        with pytest.raises(OutputError, match=r"OUTPUT '.*' is the same file as INPUT .*would destroy the input"):
            check_outputs([("OUTPUT", str(spelling))], [("INPUT", str(scene))])
    check_outputs([("OUTPUT", str(tmp_path / "out" / "scene.tif"))], [("INPUT", str(scene))])


def test_a_gdal_virtual_path_protects_the_archive_it_reads(tmp_path):
    import zipfile

    from fers.fers_core.io.output_safety import input_files

    scene = write_cube(tmp_path / "scene.tif", np.ones((2, 3, 4), np.float32))
    for archive in (tmp_path / "scenes.zip", tmp_path / "scenes.tif"):  # any name, given in braces
        with zipfile.ZipFile(archive, "w") as zipped:
            zipped.write(scene, "inner/scene.tif")
    for virtual, archive in ((f"/vsizip/{tmp_path}/scenes.zip/inner/scene.tif", "scenes.zip"),
                             (f"/vsizip/{{{tmp_path}/scenes.tif}}/inner/scene.tif", "scenes.tif")):
        assert input_files(virtual) == [str(tmp_path / archive)]
        with pytest.raises(OutputError, match=rf"is the same file as INPUT '/vsizip/.*' \(its file '{archive}'\)"):
            check_outputs([("OUTPUT", str(tmp_path / "x" / ".." / archive))], [("INPUT", virtual)])
    assert input_files("/vsicurl/https://example.org/scene.tif") == []  # remote: nothing local to protect


def test_companion_files_count(tmp_path):
    """An ENVI header, GDAL's aux.xml and a checkpoint folder's files belong to their input."""
    data = touch(tmp_path / "scene.bsq")
    touch(tmp_path / "scene.hdr")
    with pytest.raises(OutputError, match=r"writing it also writes '.*scene.hdr'.*its file 'scene.hdr'"):
        check_outputs([("OUTPUT", str(tmp_path / "scene.dat"))], [("INPUT", str(data))])  # ENVI: scene.hdr too
    check_outputs([("OUTPUT", str(tmp_path / "scene.tif"))], [("INPUT", str(data))])  # a GeoTIFF writes no .hdr
    with pytest.raises(OutputError, match="its file 'scene.hdr'"):
        check_outputs([("OUTPUT", str(tmp_path / "scene.hdr"))], [("INPUT", str(data))])
    touch(tmp_path / "scores.tif.aux.xml")
    with pytest.raises(OutputError, match="scores.tif.aux.xml"):
        check_outputs([("OUTPUT_HTML", str(tmp_path / "scores.tif.aux.xml"))],
                      [("SCORES", str(tmp_path / "scores.tif"))])
    from osgeo import gdal

    source = tmp_path / "data" / "tile.tif"
    source.parent.mkdir()
    tile = gdal.GetDriverByName("GTiff").Create(str(source), 4, 4, 1)
    tile.SetGeoTransform((0, 1, 0, 0, 0, -1))
    tile = None
    gdal.BuildVRT(str(tmp_path / "mosaic.vrt"), [str(source)]).FlushCache()
    with pytest.raises(OutputError, match="is the same file as INPUT '.*mosaic.vrt' \\(its file 'tile.tif'\\)"):
        check_outputs([("OUTPUT", str(source))], [("INPUT", str(tmp_path / "mosaic.vrt"))])  # a VRT's source
    folder = tmp_path / "checkpoint"
    convh = touch(folder / "convh.pt")
    with pytest.raises(OutputError, match=r"OUTPUT_MODEL '.*convh.pt' is the same file as FOLDER .*file 'convh.pt'"):
        check_outputs([("OUTPUT_MODEL", str(convh))], [("FOLDER", str(folder))])


def test_two_outputs_on_one_file_are_refused_with_both_names(tmp_path):
    with pytest.raises(OutputError, match=r"OUTPUT_MASK and OUTPUT are the same file \('.*a.tif'\)"):
        check_outputs([("OUTPUT", str(tmp_path / "a.tif")), ("OUTPUT_MASK", str(tmp_path / "x" / ".." / "a.tif"))])
    touch(tmp_path / "b.tif")
    os.link(tmp_path / "b.tif", tmp_path / "c.tif")
    with pytest.raises(OutputError, match="OUTPUT_SPECTRAL and OUTPUT are the same file"):
        check_outputs([("OUTPUT", str(tmp_path / "b.tif")), ("OUTPUT_SPECTRAL", str(tmp_path / "c.tif"))])
    with pytest.raises(OutputError, match="OUTPUT_MASK and OUTPUT are written to the same file '.*a.hdr'"):
        check_outputs([("OUTPUT", str(tmp_path / "a.bsq")), ("OUTPUT_MASK", str(tmp_path / "a.dat"))])
    check_outputs([("OUTPUT", str(tmp_path / "a.tif")), ("OUTPUT_MASK", str(tmp_path / "a_mask.tif"))])


# --- locations ---------------------------------------------------------------------------------------------------

def test_output_locations(tmp_path):
    with pytest.raises(OutputError, match=r"OUTPUT '.*' is an existing folder: give a file name, e.g. '.*output.tif'"):
        check_location("OUTPUT", str(tmp_path))
    blocker = touch(tmp_path / "file.txt")
    with pytest.raises(OutputError, match=r"output folder of OUTPUT_POLYGONS .*: .*file.txt. is a file"):
        check_location("OUTPUT_POLYGONS", str(blocker / "deeper" / "objects.gpkg"))
    check_location("OUTPUT", str(tmp_path / "new" / "folder" / "scores.tif"))
    assert not (tmp_path / "new").exists()  # the check writes nothing


def test_unwritable_folder(tmp_path):
    folder, release = read_only_folder(tmp_path)
    try:
        with pytest.raises(OutputError, match="Cannot write to the folder '.*readonly' of OUTPUT"):
            check_location("OUTPUT", str(folder / "scores.tif"))
    finally:
        release()


# --- temporaries -------------------------------------------------------------------------------------------------

def test_temporary_names_are_unique_to_the_run_and_built_from_the_file_name(tmp_path):
    folder = tmp_path / "run.tif.out"  # a folder whose name holds ".tif"
    folder.mkdir()
    names = {atomic.temporary_path(folder / "scores.tif", "features", ".bin") for _ in range(100)}
    assert len(names) == 100
    for name in names:
        assert os.path.dirname(name) == str(folder)
        assert atomic.owner(name) == (atomic.HOST, os.getpid())
        assert os.path.basename(name).startswith(".scores.features.partial-") and name.endswith(".bin")


def test_an_envi_header_names_the_output_not_its_temporary(tmp_path):
    with RasterWriter(tmp_path / "scores.bsq", 4, 3) as writer:
        writer.write(Window(0, 0, 3, 4), np.ones((1, 3, 4), dtype=np.float32))
        writer.commit()
    assert sorted(os.listdir(tmp_path)) == ["scores.bsq", "scores.bsq.aux.xml", "scores.hdr"]
    header = (tmp_path / "scores.hdr").read_text()
    assert f"description = {{\n{tmp_path / 'scores.bsq'}}}" in header and "partial" not in header


def test_feature_spill_lives_beside_the_output_under_a_folder_named_like_a_raster(tmp_path):
    from fers.fers_core.feedback import Feedback
    from fers.fers_core.pipeline.spill import FeatureSpill

    class Log(Feedback):
        lines = []

        def info(self, message):
            self.lines.append(message)

    folder = tmp_path / "run.tif.out"
    folder.mkdir()
    window = Window(0, 0, 10, 10)
    with ExitStack() as stack:
        spill = FeatureSpill.create(str(folder / "scores.tif"), [window], 4, 1, Log(), stack)
        assert os.path.dirname(spill.path) == str(folder) and os.path.exists(spill.path)
        assert any(f"temporary file in {folder} " in line for line in Log.lines)  # where the large temporary is
        spill.put(window, [np.ones((4, 10, 10), np.float32)], np.ones((10, 10), bool))
        arrays, valid = spill.get(window)
        assert np.array_equal(arrays[0], np.ones((4, 10, 10), np.float32)) and valid.all()
    assert os.listdir(folder) == []


def dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_temporaries_of_dead_runs_are_removed_and_only_those(tmp_path):
    dead = dead_pid()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = touch(tmp_path / f".scores.features.partial-{atomic.HOST}-{dead}-0123abcd.bin")
        stale_sidecar = touch(tmp_path / f".scores.partial-{atomic.HOST}-{dead}-89abcdef.tif.aux.xml")
        live = touch(tmp_path / f".scores.partial-{atomic.HOST}-{alive.pid}-0123abcd.tif")
        other_host = touch(tmp_path / f".scores.partial-{'0' * 6 if atomic.HOST != '0' * 6 else '1' * 6}-{dead}-"
                                      "0123abcd.tif")
        not_ours = [touch(tmp_path / ".scores.partial-0123abcd.tif"), touch(tmp_path / "scores.tif"),
                    touch(tmp_path / f"partial-{atomic.HOST}-{dead}-0123abcd.tif")]
        removed = atomic.remove_stale(str(tmp_path)).removed
        assert sorted(removed) == sorted([str(stale), str(stale_sidecar)])
        assert live.exists() and other_host.exists() and all(path.exists() for path in not_ours)
    finally:
        alive.kill()
        alive.wait()


def test_a_failed_run_leaves_none_of_its_outputs_but_keeps_a_resume_checkpoint(tmp_path):
    with pytest.raises(RuntimeError), RunGuard([str(tmp_path / "a.tif")]):
        first = atomic.AtomicOutput(tmp_path / "a.tif")
        open(first.path, "w").close()
        first.commit()
        checkpoint = atomic.AtomicOutput(tmp_path / "m.pt.resume.pt", keep_on_failure=True)
        open(checkpoint.path, "w").close()
        checkpoint.commit()
        scratch = atomic.Temporary(tmp_path / "a.tif", "features", ".bin")
        open(scratch.path, "w").close()
        raise RuntimeError("a later step failed")
    assert sorted(os.listdir(tmp_path)) == ["m.pt.resume.pt"]
    assert atomic.live_temporaries() == []
    with RunGuard([str(tmp_path / "b.tif")]):  # a run that succeeds keeps its outputs
        second = atomic.AtomicOutput(tmp_path / "b.tif")
        open(second.path, "w").close()
        second.commit()
    assert (tmp_path / "b.tif").exists()


def written_output(destination, content):
    output = atomic.AtomicOutput(destination)
    Path(output.path).write_bytes(content)
    return output


def test_a_failed_rerun_puts_back_the_outputs_it_replaced_and_a_successful_one_drops_their_stale_sidecars(tmp_path):
    old = {"a.tif": b"old scores", "a.tif.aux.xml": b"old statistics", "a.tif.ovr": b"old overviews",
           "b.gpkg": b"old polygons", "b.gpkg-wal": b"old journal"}
    for name, content in old.items():
        touch(tmp_path / name, content)
    log = Log()
    with pytest.raises(RuntimeError), RunGuard([str(tmp_path / "a.tif")], log):
        written_output(tmp_path / "a.tif", b"new scores").commit()
        assert (tmp_path / "a.tif").read_bytes() == b"new scores" and not (tmp_path / "a.tif.ovr").exists()
        raise RuntimeError("the polygons failed")  # before b.gpkg was committed
    assert {name: (tmp_path / name).read_bytes() for name in sorted(os.listdir(tmp_path))} == old  # as it was
    assert [line for line in log.infos if line.startswith("The earlier files at the outputs' names are as they were: "
                                                          "put back ")]
    with RunGuard([str(tmp_path / "a.tif")]):
        written_output(tmp_path / "a.tif", b"new scores").commit()
        written_output(tmp_path / "b.gpkg", b"new polygons").commit()
    assert {name: (tmp_path / name).read_bytes() for name in sorted(os.listdir(tmp_path))} == {
        "a.tif": b"new scores", "b.gpkg": b"new polygons"}  # no overviews or journal of the old files, no backups
    written_output(tmp_path / "a.tif", b"outside a run").commit()  # without a guard: replaced at once
    assert sorted(os.listdir(tmp_path)) == ["a.tif", "b.gpkg"]


def test_nested_guards_undo_a_commit_once_and_the_outer_one_can_still_undo_an_inner_success(tmp_path):
    touch(tmp_path / "a.tif", b"earlier")
    with pytest.raises(RuntimeError), RunGuard([str(tmp_path / "a.tif")]):
        with pytest.raises(RuntimeError), RunGuard([str(tmp_path / "a.tif")]):
            written_output(tmp_path / "a.tif", b"inner").commit()
            raise RuntimeError("the inner run fails")
        assert (tmp_path / "a.tif").read_bytes() == b"earlier"  # undone once, by the inner guard
        raise RuntimeError("the outer run fails too")
    assert os.listdir(tmp_path) == ["a.tif"] and (tmp_path / "a.tif").read_bytes() == b"earlier"
    with pytest.raises(RuntimeError), RunGuard([str(tmp_path / "a.tif")]):
        with RunGuard([str(tmp_path / "a.tif")]):
            written_output(tmp_path / "a.tif", b"inner").commit()
        raise RuntimeError("the outer run fails after the inner one succeeded")
    assert os.listdir(tmp_path) == ["a.tif"] and (tmp_path / "a.tif").read_bytes() == b"earlier"


def test_a_failing_run_never_puts_an_older_file_over_the_output_another_run_wrote_since(tmp_path):
    """Two runs write one output: A commits, B replaces A's file and succeeds, then A fails. A's undo leaves B's
    output and its sidecar alone and deletes its own backup of the earliest file."""
    touch(tmp_path / "a.tif", b"earliest")
    touch(tmp_path / "a.tif.aux.xml", b"earliest statistics")
    a_committed, b_done = threading.Event(), threading.Event()
    errors = []

    def run_a():
        try:
            with RunGuard([str(tmp_path / "a.tif")]):
                written_output(tmp_path / "a.tif", b"A").commit()
                a_committed.set()
                b_done.wait(60)
                raise RuntimeError("A fails after B's success")
        except RuntimeError as error:
            errors.append(str(error))

    def run_b():
        a_committed.wait(60)
        with RunGuard([str(tmp_path / "a.tif")]):
            output = written_output(tmp_path / "a.tif", b"B")
            Path(output.path + ".aux.xml").write_bytes(b"B statistics")
            output.commit()
        b_done.set()

    threads = [threading.Thread(target=run_a), threading.Thread(target=run_b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == ["A fails after B's success"]
    assert {name: (tmp_path / name).read_bytes() for name in sorted(os.listdir(tmp_path))} == {
        "a.tif": b"B", "a.tif.aux.xml": b"B statistics"}  # no backup left either


def test_a_killed_runs_backup_never_replaces_the_output_a_later_run_finished(tmp_path, monkeypatch):
    """A run killed after its commit left the earlier file aside; another run has replaced the output since (its
    inode changed later than the backup's): the clean-up keeps that output and deletes the older backup."""
    base = f"partial-{atomic.HOST}-{dead_pid()}-0123abcd"
    backup = touch(tmp_path / f".a.previous.{base}.tif", b"earlier")
    touch(tmp_path / "a.tif", b"a later run's")
    monkeypatch.setattr(atomic, "REPLACED_AFTER_SECONDS", -1.0)  # "later" without waiting: any newer inode
    stale = atomic.remove_stale(str(tmp_path))
    assert stale.removed == [str(backup)] and stale.restored == []
    assert os.listdir(tmp_path) == ["a.tif"] and (tmp_path / "a.tif").read_bytes() == b"a later run's"


def test_a_resume_checkpoint_committed_inside_nested_guards_outlives_their_failure(tmp_path):
    touch(tmp_path / "m.pt.resume.pt", b"an older checkpoint")
    with pytest.raises(RuntimeError), RunGuard([str(tmp_path / "m.pt")]):
        with pytest.raises(RuntimeError), RunGuard([str(tmp_path / "m.pt")]):
            checkpoint = atomic.AtomicOutput(tmp_path / "m.pt.resume.pt", keep_on_failure=True)
            Path(checkpoint.path).write_bytes(b"epoch 1")
            checkpoint.commit()
            raise RuntimeError("training fails")
        raise RuntimeError("so does the run around it")
    assert os.listdir(tmp_path) == ["m.pt.resume.pt"] and (tmp_path / "m.pt.resume.pt").read_bytes() == b"epoch 1"


def test_the_earlier_outputs_a_killed_run_had_moved_aside_come_back_whole(tmp_path):
    """A run killed (kill -9) after it had moved earlier outputs aside never finished: the next run's clean-up puts
    each earlier output back with its own sidecars, over what the killed run had put there, and drops the killed
    run's sidecars of it; it deletes them as temporaries no more."""
    dead = dead_pid()
    base = f"partial-{atomic.HOST}-{dead}-0123abcd"
    touch(tmp_path / f".a.previous.{base}.tif", b"earlier")  # moved aside, nothing in its place yet
    touch(tmp_path / f".a.previous.{base}.tif.aux.xml", b"earlier statistics")
    touch(tmp_path / f".b.previous.{base}.tif", b"earlier b")  # moved aside and replaced by the killed run
    touch(tmp_path / f".b.previous.{base}.tif.ovr", b"earlier overviews")
    touch(tmp_path / "b.tif", b"the killed run's")
    touch(tmp_path / "b.tif.msk", b"the killed run's mask")
    touch(tmp_path / f".b.{base}.tif.aux.xml", b"a temporary")
    long_stem = "y" * atomic.STEM_CHARACTERS
    unknown = touch(tmp_path / f".{long_stem}.previous.{base}.tif", b"earlier")
    stale = atomic.remove_stale(str(tmp_path))
    assert sorted(stale.restored) == sorted(str(tmp_path / name) for name in
                                            ("a.tif", "a.tif.aux.xml", "b.tif", "b.tif.ovr"))
    assert stale.removed == [str(tmp_path / f".b.{base}.tif.aux.xml")] and stale.kept == [str(unknown)]
    assert {name: (tmp_path / name).read_bytes() for name in sorted(os.listdir(tmp_path)) if name[0] != "."} == {
        "a.tif": b"earlier", "a.tif.aux.xml": b"earlier statistics", "b.tif": b"earlier b",
        "b.tif.ovr": b"earlier overviews"}


def test_a_device_or_pipe_is_never_replaced_by_an_output(tmp_path):
    pipe = tmp_path / "roc.csv"
    os.mkfifo(pipe)
    with pytest.raises(OutputError, match=r"^OUTPUT_CSV '.*roc.csv' is not a regular file \(a device, pipe or "):
        check_outputs([("OUTPUT_CSV", str(pipe))])
    output = written_output(pipe, b"scores")
    with pytest.raises(OutputError, match="is not a regular file"):
        output.commit()  # the engine's own last line of defence
    assert stat.S_ISFIFO(os.stat(pipe).st_mode) and os.listdir(tmp_path) == ["roc.csv"]


def test_names_too_long_for_the_sidecars_are_refused_before_the_run(tmp_path):
    with pytest.raises(OutputError, match=r"^OUTPUT: the file name is 241 bytes long; use at most 240"):
        check_outputs([("OUTPUT", str(tmp_path / ("y" * 237 + ".tif")))])
    check_outputs([("OUTPUT", str(tmp_path / ("y" * 236 + ".tif")))])
    with RunGuard([str(tmp_path / "x.tif")]):  # temporaries of a legal long name stay legal, nested too
        member = atomic.Temporary(tmp_path / ("y" * 236 + ".tif"), "member1")
        spill = atomic.Temporary(member.path, "features", ".bin")
        for temporary in (member, spill):
            assert len(os.path.basename(temporary.path)) < 120
            Path(temporary.path).write_bytes(b"")
            assert atomic.owner(temporary.path) == (atomic.HOST, os.getpid())


def test_an_envi_output_may_not_rewrite_the_header_of_another_file(tmp_path):
    touch(tmp_path / "cube.dat", b"30 bands")
    touch(tmp_path / "cube.hdr", b"ENVI")
    with pytest.raises(OutputError, match=r"with the header '.*cube.hdr', which describes 'cube.dat'"):
        check_outputs([("OUTPUT", str(tmp_path / "cube.bsq"))])
    touch(tmp_path / "alone.hdr", b"ENVI")  # a header whose data file is gone: nothing to protect
    check_outputs([("OUTPUT", str(tmp_path / "alone.bsq"))])


def test_a_vrt_source_relative_to_the_working_folder_is_protected(tmp_path, monkeypatch):
    source = write_cube(tmp_path / "src" / "a.tif", np.ones((2, 4, 4), np.float32)) if (tmp_path / "src").mkdir() \
        is None else None
    bands = "".join(f'''<VRTRasterBand dataType="Float32" band="{band}"><SimpleSource>
        <SourceFilename relativeToVRT="0">a.tif</SourceFilename><SourceBand>{band}</SourceBand>
        </SimpleSource></VRTRasterBand>''' for band in (1, 2))
    (tmp_path / "cwd.vrt").write_text(f'<VRTDataset rasterXSize="4" rasterYSize="4">{bands}</VRTDataset>')
    monkeypatch.chdir(tmp_path / "src")  # GDAL reads a.tif from the working folder, not from the VRT's
    with pytest.raises(OutputError, match=r"is the same file as INPUT .*cwd.vrt' \(its file 'a.tif'\)"):
        check_outputs([("OUTPUT", source)], [("INPUT", str(tmp_path / "cwd.vrt"))])
    touch(tmp_path / "a.tif", b"not the VRT's source")  # beside the VRT, but GDAL reads the working folder's
    check_outputs([("OUTPUT", str(tmp_path / "a.tif"))], [("INPUT", str(tmp_path / "cwd.vrt"))])


def test_an_input_named_like_a_sidecar_of_an_output_is_protected(tmp_path):
    """The commit moves an output's old .msk/.ovr/journals aside (GDAL would read them with the new file)."""
    mask = touch(tmp_path / "scores.tif.msk", b"a mask the user gave")
    with pytest.raises(OutputError, match=r"writing it also writes '.*scores.tif.msk'\) is the same file as MASK"):
        check_outputs([("OUTPUT", str(tmp_path / "scores.tif"))], [("MASK", str(mask))])


def test_a_writer_that_cannot_create_its_file_says_so_without_a_traceback():
    from fers.fers_core.errors import InputError

    with pytest.raises(InputError, match=r"^Cannot (create the output file in|write to folder) '/proc'"):
        RasterWriter("/proc/fers-test.tif", 4, 4)


@pytest.fixture
def interruptible():
    """Ctrl+C delivered as KeyboardInterrupt during the test, even when the suite was started in the background
    (a shell then ignores SIGINT for it, and RunGuard, rightly, leaves an ignored signal alone)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_in_the_main_thread_interrupts_the_run_and_restores_the_handlers(tmp_path, interruptible):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted), RunGuard([str(tmp_path / "a.tif")]):
        output = atomic.AtomicOutput(tmp_path / "a.tif")
        open(output.path, "w").close()
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(10**6):  # the handler runs between two bytecodes
            pass
    assert os.listdir(tmp_path) == []
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_no_handler_is_installed_outside_the_main_thread(tmp_path):
    seen = []

    def run():
        with RunGuard([str(tmp_path / "a.tif")]):
            seen.append(signal.getsignal(signal.SIGINT))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert seen == [signal.getsignal(signal.SIGINT)]


# --- write failures ----------------------------------------------------------------------------------------------

WRITE_RASTER = """
import sys
import numpy as np
sys.path.insert(0, {root!r} + "/.plugins")
from fers.fers_core.errors import OutputError
from fers.fers_core.io.windows import Window
from fers.fers_core.io.writer import RasterWriter
try:
    with RasterWriter(sys.argv[1], 1000, 1000) as writer:
        writer.write(Window(0, 0, 1000, 1000), np.random.default_rng(0).random((1000, 1000), np.float32))
        writer.commit()
except OutputError as error:
    print(error)
    sys.exit(3)
"""


def test_file_size_limit_is_a_sentence_and_leaves_nothing(tmp_path):
    completed = subprocess.run(["bash", "-c", f'ulimit -f 500; exec "{sys.executable}" -c "$0" "$1"',
                                WRITE_RASTER.format(root=ROOT), str(tmp_path / "scores.tif")],
                               capture_output=True, text=True, timeout=60)
    assert completed.returncode == 3, completed.stderr
    assert "the file-size limit was reached" in completed.stdout
    assert "needs up to about 3.8 MB" in completed.stdout and "the limit is 0.5 MB" in completed.stdout
    assert "Traceback" not in completed.stderr
    assert os.listdir(tmp_path) == []


OTHER_WRITERS = {
    "model.pt": "from fers_core.enhance.model_file import random_init_model, save_model\n"
                "save_model(random_init_model(16, seed=0), sys.argv[1])",
    "report.html": "from fers_core.detectors.evaluation import _write_atomically\n"
                   "_write_atomically(sys.argv[1], lambda stream: stream.write('x' * 300_000))",
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(OTHER_WRITERS))
def test_file_size_limit_in_other_writers(tmp_path, name):
    script = ("import sys\nsys.path.insert(0, sys.argv[2])\nfrom fers_core.errors import OutputError\ntry:\n"
              + "".join(f"    {line}\n" for line in OTHER_WRITERS[name].splitlines())
              + "except OutputError as error:\n    print(error)\n    sys.exit(3)\n")
    completed = subprocess.run(["bash", "-c", f'ulimit -f 100; exec "{sys.executable}" -c "$0" "$1" "$2"', script,
                                str(tmp_path / name), ROOT], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 3, completed.stdout + completed.stderr
    assert f"Writing '{tmp_path / name}' failed: the file-size limit was reached" in completed.stdout
    assert os.listdir(tmp_path) == []


def small_file_system(tmp_path, size="1m"):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
    return folder


@pytest.mark.parametrize("name", ["scores.img", "scores.bsq"])
def test_an_uncompressed_output_larger_than_the_free_space_is_refused_before_it_is_written(tmp_path, name):
    """Erdas Imagine does not report the writes a full disk refuses: its file came out silently corrupt."""
    folder = small_file_system(tmp_path, "200k")
    try:
        with pytest.raises(OutputError, match=r"needs about 256 kB \(uncompressed: this format holds every pixel\), "
                                              r"but only \d+ kB are free there"):
            RasterWriter(folder / name, 256, 256)
        assert os.listdir(folder) == []
        with RasterWriter(folder / name, 64, 64) as writer:  # one that fits is written
            writer.write(Window(0, 0, 64, 64), np.ones((64, 64), np.float32))
            writer.commit()
        assert name in os.listdir(folder)
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_full_disk_is_a_sentence_and_leaves_nothing(tmp_path):
    folder = small_file_system(tmp_path)
    try:
        with pytest.raises(OutputError, match=r"failed: the disk is full \(the file needs up to about 3.8 MB"):
            with RasterWriter(folder / "scores.tif", 1000, 1000) as writer:
                writer.write(Window(0, 0, 1000, 1000), np.random.default_rng(0).random((1000, 1000), np.float32))
                writer.commit()
        assert os.listdir(folder) == []
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_refused_write_where_no_space_is_free_is_not_called_a_full_disk():
    """/proc has no size at all (so no free space); a write there fails for another reason, which the message must
    give, even when the error itself is vague."""
    import errno

    from fers.fers_core.io.write_failures import free_bytes, write_failure

    assert free_bytes("/proc") is None  # a pseudo file system: its 0 free bytes say nothing
    message = str(write_failure(PermissionError(errno.EACCES, "Permission denied"), "/proc/report.html"))
    assert "the system refused the write" in message and "Permission denied" in message
    assert "disk is full" not in message
    vague = str(write_failure(RuntimeError("write failed"), "/proc/report.html"))  # GDAL's kind of message
    assert "disk is full" not in vague and "the system refused the write (write failed)" in vague


def test_batch_output_on_another_input_is_refused(tmp_path):
    from fers.fers_core.distributed.batch import batch_jobs

    first, second = touch(tmp_path / "a.tif"), touch(tmp_path / "a_rx.tif")  # a.tif's output is a_rx.tif
    with pytest.raises(OutputError, match="The output of a.tif '.*a_rx.tif' is the same file as input a_rx.tif"):
        batch_jobs([str(first), str(second)], str(tmp_path), detector="rx")


def test_cli_rx_in_in_is_refused(tmp_path):
    from fers.fers_core.synthetic import write_scene

    scene, _ = write_scene(str(tmp_path / "scene.tif"), str(tmp_path / "truth.tif"), rows=60, cols=60, bands=6)
    before = open(scene, "rb").read()
    for output in (scene, str(tmp_path / "x" / ".." / "scene.tif")):
        completed = subprocess.run([sys.executable, "-m", "fers_core", "rx", scene, output], capture_output=True,
                                   text=True, cwd=ROOT, timeout=60)
        assert completed.returncode != 0
        assert "is the same file as the input" in completed.stderr and "Traceback" not in completed.stderr
    assert open(scene, "rb").read() == before
