"""From a FaceDataset to network-ready batches: reading, decoding, sampling, augmentation.

Two decode paths, one result (uint8 NCHW crops of side ``spec.crop_size`` -> `to_network_input`):
- ``"gpu"``: DataLoader workers only read encoded bytes, packed per batch into one buffer plus offsets
  (`PackedImages`): one tensor per batch crosses the process boundary, not one per image (each costs the
  main process a file-descriptor handshake: ~2,100 img/s at most, and "Too many open files" under a
  1024-fd limit). The main process hands the whole batch to nvJPEG
  (``torchvision.io.decode_jpeg(list, device="cuda")``), one batch ahead on its own CUDA stream
  (`DecodeAhead`), so decoding overlaps the previous training step.
- ``"cpu"``: workers decode with OpenCV (libjpeg-turbo, the decoder the app uses) and ship uint8 crops.
Images whose size differs from ``spec.crop_size`` (loose crops in an arbitrary folder tree) are resized to
it with area interpolation, as the app's own crop functions do; .rec faces are already 112x112.

`EpochSampler` gives every rank its share of a permutation seeded by (seed, epoch), and can start
mid-epoch, so a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

import os
import queue
import signal
import threading
from contextlib import nullcontext
from typing import Iterator, NamedTuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from ..core import report
from ..core.decode import DecodeError, check_packed_headers, decode_image
from ..core.errors import FaceIDError
from ..data.datasets import FaceDataset
from ..model.preprocessing import PreprocessSpec, to_network_input

DECODE_MODES = ("auto", "gpu", "cpu")


def decode_face(data: bytes, size: int, source: str = "image") -> np.ndarray:
    """Encoded image -> HxWx3 uint8 RGB of side `size` (area-resized if it has another size)."""
    img = decode_image(data, source)
    if img.shape[0] != size or img.shape[1] != size:
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    return img


class FaceSamples(Dataset):
    """Item j -> (image, label, sample index). image: uint8 (3, S, S) when decode_on_cpu, else the encoded
    bytes (packed per batch by `collate_packed`, decoded a batch at a time by `BatchFeed`)."""

    def __init__(self, dataset: FaceDataset, indices=None, decode_on_cpu: bool = True):
        self.dataset = dataset
        self.indices = np.arange(len(dataset)) if indices is None else np.asarray(indices, dtype=np.int64)
        self.decode_on_cpu = decode_on_cpu

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int):
        try:
            return self._item(int(self.indices[j]))
        except FaceIDError as err:
            # A worker's exception reaches the main process rebuilt from its message alone, which subclasses
            # with other constructors (DecodeError) do not survive: send the plain kind (clean_worker_error).
            raise FaceIDError(str(err), *err.settings, exit_code=err.exit_code) from None

    def _item(self, i: int):
        data = self.dataset.read_bytes(i)
        label = int(self.dataset.labels[i])
        if self.decode_on_cpu:
            img = decode_face(data, self.dataset.spec.crop_size, self.dataset.describe(i))
            return torch.from_numpy(img).permute(2, 0, 1).contiguous(), label, i
        return data, label, i


class PackedImages(NamedTuple):
    """The encoded images of one batch in one buffer: image i is data[offsets[i]:offsets[i + 1]].

    data: 1-D uint8, offsets: (B + 1,) int64. Two tensors cross the worker -> main process boundary per
    batch whatever its size (pinned as a whole by the DataLoader when pin_memory is on)."""

    data: torch.Tensor
    offsets: torch.Tensor

    @classmethod
    def pack(cls, images: list[bytes]) -> "PackedImages":
        offsets = np.zeros(len(images) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in images], out=offsets[1:])
        joined = bytearray(b"".join(images))
        data = torch.frombuffer(joined, dtype=torch.uint8) if joined else torch.zeros(0, dtype=torch.uint8)
        return cls(data, torch.from_numpy(offsets))

    def unpack(self) -> list[torch.Tensor]:
        """Views (no copies) of each image's bytes, in batch order (one split call: ~3x faster than slicing)."""
        return list(self.data.split(self.offsets.diff().tolist()))


def collate_packed(batch) -> tuple[PackedImages, torch.Tensor, torch.Tensor]:
    """[(bytes, label, index)] -> (PackedImages, labels (B,) int64, indices (B,) int64)."""
    data, labels, idx = zip(*batch)
    return PackedImages.pack(list(data)), torch.tensor(labels, dtype=torch.int64), torch.tensor(idx, dtype=torch.int64)


class EpochSampler(Sampler[int]):
    """This rank's indices for one epoch: a permutation seeded by seed + epoch, cut to a whole number of
    global batches (every rank takes the same number of steps), strided by rank, from `start_batch` on."""

    def __init__(
        self, n: int, batch_size: int, world_size: int = 1, rank: int = 0, seed: int = 42, shuffle: bool = True
    ):
        self.n, self.batch_size, self.world, self.rank = n, batch_size, world_size, rank
        self.seed, self.shuffle = seed, shuffle
        self.epoch, self.start_batch = 0, 0

    @property
    def batches_per_epoch(self) -> int:
        return self.n // (self.batch_size * self.world)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            order = torch.arange(self.n)
        order = order[: self.batches_per_epoch * self.batch_size * self.world][self.rank :: self.world]
        return iter(order[self.start_batch * self.batch_size :].tolist())

    def __len__(self) -> int:
        return max(0, (self.batches_per_epoch - self.start_batch) * self.batch_size)


def _worker_init(_worker_id: int) -> None:
    """Workers leave SIGINT and SIGTERM to the main process and decode single-threaded.

    Ctrl-C, `kill` of the process group, SLURM's scancel and preemption signal the workers too; the main
    process stops at the next step boundary and writes a checkpoint, which needs the workers alive until then.
    A SIGTERM from the main process itself (how the DataLoader and interpreter exit end leftover workers)
    still ends the worker at once, so it can never hold the main process's exit; and a worker exits by
    itself when its parent is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # this thread and the ones it starts
    threading.Thread(target=_exit_on_sigterm_from_parent, daemon=True, name="faceid-sigterm").start()
    cv2.setNumThreads(1)


def _exit_on_sigterm_from_parent() -> None:
    """Take every SIGTERM sent to this worker; exit only when the sender is the parent."""
    parent = os.getppid()
    while True:
        if signal.sigwaitinfo({signal.SIGTERM}).si_pid == parent:
            os._exit(0)


def make_loader(
    samples: FaceSamples,
    batch_size: int,
    workers: int,
    sampler: Sampler | None = None,
    pin_memory: bool = False,
    persistent: bool = True,
    drop_last: bool = False,
) -> DataLoader:
    """DataLoader with the feed's collate; persistent workers and deeper prefetch when workers > 0."""
    if workers > 0:
        # OpenCV's thread pool does not survive fork(): a worker forked from a process whose pool has run
        # (e.g. after evaluating or detecting faces) hangs in cv2.setNumThreads. Settling this process's pool
        # to one thread first joins its threads, so forked workers start from a clean pool. The process that
        # feeds workers does no OpenCV work of its own that needs more.
        cv2.setNumThreads(1)
    # A private generator: creating a loader iterator must not draw from the global RNG, or a run resumed
    # mid-epoch would see different dropout/flip draws than the uninterrupted run.
    return DataLoader(
        samples,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        num_workers=workers,
        pin_memory=pin_memory,
        drop_last=drop_last,
        generator=torch.Generator().manual_seed(0),
        collate_fn=None if samples.decode_on_cpu else collate_packed,
        persistent_workers=persistent and workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        worker_init_fn=_worker_init if workers > 0 else None,
    )


def resolve_decode(mode: str, device: torch.device) -> str:
    """ "auto" -> "gpu" on CUDA (nvJPEG), else "cpu"; "gpu" without CUDA is an error."""
    if mode not in DECODE_MODES:
        raise FaceIDError(f"Unknown decode mode {mode!r}; choose one of {', '.join(DECODE_MODES)}.", "decode")
    if mode == "auto":
        return "gpu" if device.type == "cuda" else "cpu"
    if mode == "gpu" and device.type != "cuda":
        raise FaceIDError(
            "Decoding on the GPU needs a CUDA device; decode on the CPU (or auto) on this machine.", "decode"
        )
    return mode


def _fit(img: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (3, H, W) -> (3, size, size): area-average when shrinking (cv2 INTER_AREA), bilinear otherwise."""
    if img.shape[-1] == size and img.shape[-2] == size:
        return img
    mode = "area" if img.shape[-1] >= size and img.shape[-2] >= size else "bilinear"
    out = F.interpolate(img[None].float(), size=(size, size), mode=mode)
    return out[0].round_().clamp_(0, 255).to(torch.uint8)


def gpu_decode(
    packed: PackedImages, size: int, device: torch.device, name_of=None, strict: bool = False
) -> tuple[torch.Tensor, list[int]]:
    """A packed batch of encoded images -> (uint8 (B, 3, size, size) on `device`, the indices decoded on the CPU).

    The gate's header check runs over the whole buffer at once (`check_packed_headers`). JPEGs go to nvJPEG in
    one batched call; anything else (a PNG in a folder tree), and any JPEG nvJPEG refuses (e.g. CMYK), is
    decoded by torchvision on the CPU and listed in the second value, unless `strict` (an explicit
    ``--decode gpu``), where it is an error instead. A file neither decoder can read raises FaceIDError naming
    it; names (`name_of(i)`) are built only for a failure.
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    def name(i: int) -> str:
        return name_of(i) if name_of is not None else f"batch image {i}"

    data = packed.unpack()
    is_jpeg = check_packed_headers(packed.data.numpy(), packed.offsets.numpy(), name)
    out: dict[int, torch.Tensor] = {}
    jpeg_idx = np.nonzero(is_jpeg)[0].tolist()
    if jpeg_idx:
        try:
            decoded = decode_jpeg([data[i] for i in jpeg_idx], mode=ImageReadMode.RGB, device=device)
            out.update(zip(jpeg_idx, decoded))
        except RuntimeError:  # one bad file fails the whole batched call: decode one by one instead
            for i in jpeg_idx:
                try:
                    out[i] = decode_jpeg(data[i], mode=ImageReadMode.RGB, device=device)
                except RuntimeError as err:
                    if strict:
                        _cpu_decode(data[i], device, name(i))  # a damaged file says so; else nvJPEG's refusal:
                        raise DecodeError(
                            "Cannot decode",
                            name(i),
                            f"nvJPEG refused it ({_first_line(err)}); --decode auto decodes such images on the CPU.",
                            "decode",
                        ) from None
    on_cpu = [i for i in range(len(data)) if i not in out]
    if strict and on_cpu:
        raise DecodeError(
            "Cannot decode",
            name(on_cpu[0]),
            "it is not a JPEG, and --decode gpu decodes JPEGs only; --decode auto decodes other images on the CPU.",
            "decode",
        )
    for i in on_cpu:
        out[i] = _cpu_decode(data[i], device, name(i))
    return torch.stack([_fit(out[i], size) for i in range(len(data))]), on_cpu


def _cpu_decode(data: torch.Tensor, device: torch.device, what: str) -> torch.Tensor:
    from torchvision.io import ImageReadMode
    from torchvision.io import decode_image as tv_decode_image

    try:
        return tv_decode_image(data, mode=ImageReadMode.RGB).to(device, non_blocking=True)
    except RuntimeError:
        raise DecodeError("Cannot decode", what, "its image data is damaged or truncated.") from None


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0].rstrip(".")


class BatchFeed:
    """Turns a loader batch into (x, labels) on `device`: x float32 (B, 3, spec.size, spec.size) in about
    [-1, 1], channels_last if asked; with `augment`, each image is mirrored with probability 1/2.

    GPU decode: `strict` (an explicit --decode gpu) makes an image nvJPEG cannot take an error; otherwise it is
    decoded on the CPU, the first time with one warning, and counted in `cpu_decoded` (the epoch line says how
    many), so a slow fallback is never silent."""

    def __init__(
        self, spec: PreprocessSpec, device: torch.device, decode: str, channels_last: bool, strict: bool = False
    ):
        self.spec, self.device, self.decode, self.channels_last = spec, device, decode, channels_last
        self.strict = strict
        self.cpu_decoded = 0  # images of GPU-decoded batches that went to the CPU decoder, since construction

    def crops(self, batch, source=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Loader batch -> (uint8 (B, 3, crop, crop) on device, labels (B,) int64 on device).

        source: the dataset the batch came from, only to name a file that fails to decode."""
        images, labels = batch[0], batch[1]
        if self.decode == "gpu":
            name_of = (lambda i: source.describe(int(batch[2][i]))) if source is not None else None
            crops, on_cpu = gpu_decode(images, self.spec.crop_size, self.device, name_of, self.strict)
            if on_cpu:
                if not self.cpu_decoded:
                    first = name_of(on_cpu[0]) if name_of is not None else f"batch image {on_cpu[0]}"
                    report.warn(
                        f"warning: {len(on_cpu)} image(s) of a batch went to the CPU decoder (nvJPEG cannot take "
                        f"them: not JPEGs, or JPEGs it refuses, such as {first}); training goes on, slower, and each "
                        f"epoch line counts them (--decode gpu makes this an error, --decode cpu avoids nvJPEG)"
                    )
                self.cpu_decoded += len(on_cpu)
        else:
            crops = images.to(self.device, non_blocking=True)
        return crops, labels.to(self.device, non_blocking=True)

    def __call__(self, batch, augment: bool = False, source=None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.finish(*self.crops(batch, source), augment=augment)

    def finish(
        self, crops: torch.Tensor, labels: torch.Tensor, augment: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoded crops on the device -> network input (the part that draws random numbers)."""
        x = to_network_input(crops, self.spec)
        if augment:
            mirror = torch.rand(x.shape[0], device=x.device) < 0.5
            x = torch.where(mirror[:, None, None, None], torch.flip(x, dims=[3]), x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, labels


_END = object()


class DecodeAhead:
    """Iterates a loader's batches as (uint8 crops, labels) on the device, decoding batch i + 1 while batch i
    trains: `next()` returns the batch decoded during the previous step and lets the next one start.

    A background thread takes batches from the loader and runs `feed.crops` (nvJPEG, or the host-to-device
    copy of CPU-decoded crops). On CUDA it works on its own stream; the training stream waits on that
    batch's event only when it takes the batch, so decoding overlaps the previous step on the GPU and on
    the host. Without CUDA the same thread runs without streams (the CPU-decode workers already decode
    ahead), which is the path CI exercises. Augmentation draws random numbers, so it stays on the training
    thread (`BatchFeed.finish`): the RNG sequence, and so an exact resume, do not depend on the thread.
    `close()` (or leaving a `with` block) stops the thread before the loader is iterated again.
    """

    def __init__(self, batches, feed: BatchFeed, source=None):
        self.feed, self.source = feed, source
        self._cuda = feed.device.type == "cuda"
        self._stream = torch.cuda.Stream(feed.device) if self._cuda else None
        self._ready: queue.Queue = queue.Queue()
        self._slot = threading.Semaphore(1)  # one batch decoded ahead of the one training
        self._stop = threading.Event()
        self._ended = False
        self._thread = threading.Thread(target=self._work, args=(iter(batches),), name="decode-ahead", daemon=True)
        self._thread.start()

    def _work(self, batches) -> None:
        try:
            if self._cuda:
                torch.cuda.set_device(self.feed.device)  # a new thread starts on GPU 0, whatever the rank's GPU
            with torch.cuda.stream(self._stream) if self._cuda else nullcontext():
                while self._take_slot():
                    batch = next(batches, _END)
                    if batch is _END:
                        break
                    crops, labels = self.feed.crops(batch, self.source)
                    event = None
                    if self._cuda:
                        event = torch.cuda.Event()
                        event.record(self._stream)
                    self._ready.put((crops, labels, event))
        except BaseException as err:  # handed to the training thread, raised there
            self._ready.put(err)
            return
        self._ready.put(_END)

    def _take_slot(self) -> bool:
        while not self._stop.is_set():
            if self._slot.acquire(timeout=0.1):
                return not self._stop.is_set()
        return False

    def __iter__(self) -> "DecodeAhead":
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._ended:
            raise StopIteration
        item = self._ready.get()
        if item is _END:
            self._ended = True
            raise StopIteration
        if isinstance(item, BaseException):
            self._ended = True
            raise item
        crops, labels, event = item
        if event is not None:  # the training stream waits for this batch's decode, and owns its memory now
            stream = torch.cuda.current_stream(self.feed.device)
            stream.wait_event(event)
            crops.record_stream(stream)
            labels.record_stream(stream)
        self._slot.release()
        return crops, labels

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._ended = True

    def __enter__(self) -> "DecodeAhead":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()


def clean_worker_error(err: FaceIDError) -> FaceIDError:
    """A FaceIDError re-raised by a DataLoader worker carries the worker's traceback; keep its sentence."""
    text = str(err)
    if "Traceback" not in text:
        return err
    last = [ln for ln in text.strip().splitlines() if ln.strip()][-1]
    return FaceIDError(last.split(": ", 1)[1] if "Error: " in last else last, *err.settings, exit_code=err.exit_code)
