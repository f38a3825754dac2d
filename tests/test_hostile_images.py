"""Hostile image folders (issue 23): links out of the data root or looping back into it, a dangling link,
a decompression bomb, PNGs whose damage crashed torchvision's libpng decoder (the process, with a
segfault), a decoder that kills its worker, a text file named .jpg, a non-UTF-8 classes.txt. Each ends as
one clear line naming the file, or is handled (skipped and listed by `data check`); a tree without links
keeps its fingerprint, and so its run ids."""

from __future__ import annotations

import io
import os
import shutil
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from jpeg_trees import folder_class_names, image_bytes, write_image_folder
from PIL import Image
from typer.testing import CliRunner

from ltbench.cli.app import app
from ltbench.data import images
from ltbench.errors import LtbenchError
from ltbench.registry import benchmarks

runner = CliRunner()
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")
COUNTS = [12, 10, 8]
NAMES = folder_class_names(3)
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def no_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LTBENCH_WORKERS", "0")
    monkeypatch.delenv("LTBENCH_MAX_PIXELS", raising=False)


def bench():
    return benchmarks.get("imagefolder")()


def folder(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    write_image_folder(root, COUNTS)
    return root


def check(*args: object):
    return runner.invoke(app, ["data", "check", "imagefolder", *map(str, args), "--full"])


def real(path: Path) -> str:
    return os.path.realpath(path)


def every_split(splits, limit_batch: int = 64) -> int:
    """Images in the eval batches of all three splits (a file may have been carved into any of them)."""
    return sum(len(y) for s in ("train", "val", "test") for _, y in splits.eval_batches(s, limit_batch, CPU))


def counts(root: Path) -> list[int]:
    labels = bench().scan(root).lists["train"].labels
    return [labels.count(c) for c in range(len(NAMES))]


def png_chunks(data: bytes) -> list[tuple[int, bytes, int]]:
    """(offset, type, length) of each chunk of a PNG."""
    out, pos = [], 8
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        out.append((pos, data[pos + 4:pos + 8], n))
        pos += 12 + n
    return out


def damaged_png(fix_crc: bool) -> bytes:
    """A valid 64x64 PNG with every 7th byte of its IDAT data inverted, CRC recomputed or left stale."""
    rgb = np.random.RandomState(0).randint(0, 255, size=(64, 64, 3)).astype(np.uint8)
    data = bytearray(image_bytes(rgb, "PNG"))
    for pos, kind, n in png_chunks(bytes(data)):
        if kind == b"IDAT":
            for k in range(10, n, 7):
                data[pos + 8 + k] ^= 0xFF
            if fix_crc:
                data[pos + 8 + n:pos + 12 + n] = struct.pack(">I", zlib.crc32(bytes(data[pos + 4:pos + 8 + n])))
    return bytes(data)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def bomb_png(side: int) -> bytes:
    """A real side x side all-black grayscale PNG, compressed row by row (small on disk, huge decoded)."""
    z = zlib.compressobj(9)
    row = bytes(side + 1)  # filter byte 0, then the pixels
    body = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
            + png_chunk(b"IDAT", body) + png_chunk(b"IEND", b""))


# ---------------------------------------------------------------------------------------------
# links


@pytest.mark.parametrize("kind", ["loop", "file outside", "dangling", "folder inside class", "beside classes"])
def test_links_never_lead_out_of_the_root_nor_loop_and_data_check_lists_them(kind: str, tmp_path: Path) -> None:
    root = folder(tmp_path)
    cat = root / "train" / NAMES[0]
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copy(root / "train" / NAMES[1] / "img_0000.jpg", outside / "dog.jpg")
    link, expected = {
        "loop": (cat / "up", "a link to a folder (links to folders are not followed)"),
        "file outside": (cat / "zz.jpg", f"a link to {real(outside / 'dog.jpg')}, outside the data root"),
        "dangling": (cat / "zz.jpg", f"a link to {real(tmp_path / 'gone.jpg')}, which does not exist"),
        "folder inside class": (cat / "more", "a link to a folder"),
        "beside classes": (root / "train" / "stray.jpg", "not in a class folder"),
    }[kind]
    target = {"loop": "..", "file outside": outside / "dog.jpg", "dangling": tmp_path / "gone.jpg",
              "folder inside class": root / "train" / NAMES[2], "beside classes": outside / "dog.jpg"}[kind]
    os.symlink(target, link)
    assert counts(root) == COUNTS  # before: the loop made class 0 grow from 12 to 1000+ images
    skipped = bench().scan(root).skipped
    assert len(skipped) == 1 and skipped[0].startswith(f"{link.relative_to(root)}: {expected}")
    r = check("--root", root)
    assert r.exit_code == 0, r.output
    assert "1 entry was skipped" in r.output and f"{link.relative_to(root)}: {expected}" in r.output
    assert f"train: all {sum(COUNTS)} images decode" in r.output


@pytest.mark.parametrize("where", ["class folder", "split folder"])
def test_a_linked_class_or_split_folder_is_refused_in_one_line(where: str, tmp_path: Path) -> None:
    root = folder(tmp_path)
    other = tmp_path / "other"
    write_image_folder(other, [3, 3])
    if where == "class folder":  # before: it became a fourth class
        link = root / "train" / "zz_extra"
        os.symlink(other / "train" / NAMES[0], link)
    else:
        link = root / "val"
        os.symlink(other / "train", link)
    with pytest.raises(LtbenchError, match=f"image folder: {where} {link} is a link .*follows no links to folders "
                                           f"inside the data root"):
        bench().scan(root)
    r = check("--root", root)
    assert r.exit_code == 1 and f"{where} {link} is a link" in r.output and "Traceback" not in r.output


def test_a_file_link_inside_the_root_is_used_and_keeps_the_fingerprint(tmp_path: Path) -> None:
    root = folder(tmp_path)
    before = bench().scan(root).fingerprint()
    image = root / "train" / NAMES[0] / "img_0003.jpg"
    (root / "store").mkdir()
    image.rename(root / "store" / "kept.jpg")
    os.symlink("../../store/kept.jpg", image)
    source = bench().scan(root)
    assert source.fingerprint() == before and counts(root) == COUNTS  # as before links were refused
    assert not getattr(source, "skipped", [])


def write_fixed_tree(root: Path) -> None:
    """Files of fixed sizes (a scan reads names and sizes only): nested, hidden, empty and odd names."""
    specs = {
        "train/ant/a.jpg": 101, "train/ant/B.JPG": 57, "train/ant/sub/deep/c.png": 33, "train/ant/sub/b.webp": 12,
        "train/ant/a_sub/z.gif": 80, "train/ant/notes.txt": 5, "train/ant/.hidden.jpg": 9, "train/ant/.git/x.jpg": 4,
        "train/bee/x.jpeg": 66, "train/bee/y.png": 0, "train/bee/é.jpg": 23, "train/cat/1.jpg": 44,
        "test/bee/t.jpg": 70, "val/cat/v.png": 71,
    }
    for rel, size in specs.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\xff\xd8\xff" + b"\0" * size)


def test_a_tree_without_links_keeps_its_fingerprint(tmp_path: Path) -> None:
    write_fixed_tree(tmp_path)
    source = bench().scan(tmp_path)
    # computed by the scan before links were refused (os.walk(followlinks=True)): run ids depend on it
    assert source.fingerprint() == "c1373867d3c350f8"
    assert source.lists["train"].paths == [
        "train/ant/B.JPG", "train/ant/a.jpg", "train/ant/a_sub/z.gif", "train/ant/sub/b.webp",
        "train/ant/sub/deep/c.png", "train/bee/x.jpeg", "train/bee/y.png", "train/bee/é.jpg", "train/cat/1.jpg"]
    assert source.ignored == ["train/ant/notes.txt"] and not getattr(source, "skipped", [])


def test_a_fifo_named_jpg_is_skipped_not_read(tmp_path: Path) -> None:
    root = folder(tmp_path)
    os.mkfifo(root / "train" / NAMES[0] / "pipe.jpg")  # reading it would wait for a writer forever
    assert counts(root) == COUNTS
    assert bench().scan(root).skipped == [f"train/{NAMES[0]}/pipe.jpg: not a regular file"]


# ---------------------------------------------------------------------------------------------
# split lists


def split_lists(tmp_path: Path) -> tuple[Path, Path]:
    root, lists = tmp_path / "data", tmp_path / "lists"
    paths = write_image_folder(root, COUNTS)
    lists.mkdir()
    (lists / "train.txt").write_text("".join(f"{p} {NAMES.index(p.split('/')[1])}\n" for p in paths))
    return root, lists


def test_a_classes_txt_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    root, lists = split_lists(tmp_path)
    (lists / "classes.txt").write_bytes("ant\nbee\ncaf\u00e9\n".encode("latin-1"))
    with pytest.raises(LtbenchError, match=r"classes.txt:3 is not UTF-8 text \(byte 0xe9\); save classes.txt as "
                                           r"UTF-8"):
        bench().scan(root, lists)
    r = check("--root", root, "--split-root", lists)
    assert r.exit_code == 1 and "is not UTF-8 text" in r.output and "Traceback" not in r.output


def test_a_listed_dangling_link_says_so(tmp_path: Path) -> None:
    root, lists = split_lists(tmp_path)
    image = root / "train" / NAMES[1] / "img_0002.jpg"
    image.unlink()
    os.symlink(tmp_path / "gone.jpg", image)
    with pytest.raises(LtbenchError, match=f"image {image} .* not found \\(a link to {real(tmp_path / 'gone.jpg')}, which "
                                           f"does not exist\\)"):
        bench().scan(root, lists)


# ---------------------------------------------------------------------------------------------
# files that are not what they say, bombs, damage, crashes


def test_a_text_file_named_jpg_says_it_is_not_an_image(tmp_path: Path) -> None:
    root = folder(tmp_path)
    (root / "train" / NAMES[0] / "notes.jpg").write_text("meeting notes, not a photo\n")
    r = check("--root", root)
    assert r.exit_code == 1
    assert "notes.jpg: cannot decode it (not a JPEG, PNG, GIF or WebP image: the file begins b'meeting notes, n')" \
        in r.output
    assert "decode_avif" not in r.output  # torchvision's hint, before


def test_header_sizes_of_every_format() -> None:
    rgb = np.zeros((37, 53, 3), np.uint8)
    for fmt, kw in [("JPEG", {}), ("PNG", {}), ("GIF", {}), ("WEBP", {"lossless": True}), ("WEBP", {"quality": 80}),
                    ("JPEG", {"progressive": True, "exif": b"Exif\0\0" + bytes(5000)})]:
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, fmt, **kw)
        data = buf.getvalue()
        assert images.image_pixels(data, images.image_format(data[:12])) == 37 * 53, (fmt, kw)
    frames = [Image.fromarray(np.full((20, 30, 3), 40 * k, np.uint8)) for k in range(4)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    assert images.image_pixels(buf.getvalue(), "gif") == 4 * 20 * 30  # every frame is decoded
    first = images.decode_rgb(torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8))
    assert first.shape == (3, 20, 30) and int(first.max()) == 0  # an animated GIF: its first frame


def test_a_decompression_bomb_is_refused_from_its_header(tmp_path: Path) -> None:
    root = folder(tmp_path)
    bomb = root / "train" / NAMES[0] / "bomb.png"
    bomb.write_bytes(bomb_png(10_000))  # 100 million pixels in about 100 KB
    assert bomb.stat().st_size < 200_000
    r = check("--root", root)
    assert r.exit_code == 1
    assert f"{bomb}: PNG of 100,000,000 pixels, over the limit of 89,478,485 (LTBENCH_MAX_PIXELS" in r.output


def test_the_pixel_limit_is_an_environment_setting_and_a_run_names_the_file(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    root = folder(tmp_path)
    big = root / "train" / NAMES[1] / "big.png"
    big.write_bytes(image_bytes(np.zeros((60, 70, 3), np.uint8), "PNG"))
    b = bench()
    params = {**b.params, "crop": 16, "fingerprint": b.scan(root).fingerprint()}
    splits = b.load(params, root)
    monkeypatch.setenv("LTBENCH_MAX_PIXELS", "4000")  # the tree's images are at most 40 x 40
    with pytest.raises(LtbenchError) as err:
        every_split(splits)
    msg = str(err.value)
    assert f"image {big} (listed at class folder {big.parent}): PNG of 4,200 pixels, over the limit of 4,000" in msg
    assert "raise the limit with LTBENCH_MAX_PIXELS=N (an environment variable, not part of any spec)" in msg
    monkeypatch.setenv("LTBENCH_MAX_PIXELS", "lots")
    with pytest.raises(LtbenchError, match="LTBENCH_MAX_PIXELS='lots': expected the most pixels an image may have"):
        every_split(splits)
    monkeypatch.setenv("LTBENCH_MAX_PIXELS", "5000")
    assert every_split(splits) == sum(COUNTS) + 1


def test_pngs_decode_to_torchvision_pixels() -> None:
    from torchvision.io import ImageReadMode, decode_image

    rgb = np.random.RandomState(1).randint(0, 255, size=(21, 34, 3)).astype(np.uint8)
    for mode in ("RGB", "L", "RGBA", "LA", "P", "1"):
        buf = io.BytesIO()
        Image.fromarray(rgb).convert(mode).save(buf, "PNG")
        data = torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)
        assert torch.equal(images.decode_rgb(data), decode_image(data, mode=ImageReadMode.RGB)), mode
    buf = io.BytesIO()
    Image.fromarray(np.zeros((5, 6), np.uint16)).save(buf, "PNG")
    with pytest.raises(images.ImageReadError, match="a PNG of 16 bits per channel"):
        images.decode_rgb(torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8))


def crash_on_marked(real):
    """decode_rgb, except that it kills its process (as a decoder's segfault would) on a marked PNG."""
    def decode(data: torch.Tensor) -> torch.Tensor:
        if b"CRASH-ME" in data.numpy().tobytes():
            os.kill(os.getpid(), signal.SIGKILL)
        return real(data)
    return decode


def marked_png() -> bytes:
    data = image_bytes(np.zeros((20, 20, 3), np.uint8), "PNG")
    return data[:-12] + png_chunk(b"tEXt", b"note\0CRASH-ME") + data[-12:]


def test_a_decoder_crash_in_a_run_names_the_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = folder(tmp_path)
    crash = root / "train" / NAMES[2] / "crash.png"
    crash.write_bytes(marked_png())
    b = bench()
    splits = b.load({**b.params, "crop": 16, "fingerprint": b.scan(root).fingerprint()}, root)
    monkeypatch.setattr(images, "decode_rgb", crash_on_marked(images.decode_rgb))
    monkeypatch.setenv("LTBENCH_WORKERS", "2")
    with pytest.raises(LtbenchError) as err:  # before: RuntimeError, DataLoader worker exited unexpectedly
        every_split(splits, 8)
    msg = str(err.value)
    assert msg.startswith(f"image {crash} (listed at class folder {crash.parent}): cannot decode it: the decoder "
                          f"crashed its process (DataLoader worker (pid")
    assert "Replace or remove it; `ltbench data check imagefolder" in msg


def test_data_check_reports_damaged_pngs_and_survives_a_decoder_crash(tmp_path: Path) -> None:
    """In a process of its own: before, `data check` decoded in its own process, and libpng's error on the
    damaged PNGs killed it (rc 139, a segfault), as did the decoder that kills its process on the marked one."""
    root = folder(tmp_path)
    for fix_crc in (True, False):
        (root / "train" / NAMES[0] / f"damaged_{fix_crc}.png").write_bytes(damaged_png(fix_crc))
    crash = root / "train" / NAMES[1] / "crash.png"
    crash.write_bytes(marked_png())
    script = ("import os, signal\nfrom ltbench.data import images\nreal = images.decode_rgb\n"
              "def decode(data):\n    if b'CRASH-ME' in data.numpy().tobytes(): os.kill(os.getpid(), signal.SIGKILL)\n"
              "    return real(data)\nimages.decode_rgb = decode\nfrom ltbench.cli.app import app\napp()\n")
    cmd = [sys.executable, "-c", script, "data", "check", "imagefolder", "--root", str(root), "--full"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "LTBENCH_WORKERS": "0", "COLUMNS": "300"})
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert "train: 3 of all 33 images are unreadable" in r.stdout
    for fix_crc in (True, False):
        assert f"damaged_{fix_crc}.png: cannot decode it (" in r.stdout
    assert f"{crash}: cannot decode it: the decoder crashed its process (DataLoader worker" in r.stdout
