"""Which NVML device a torch CUDA index is (pure: no NVML calls).

By UUID where torch reports one (:func:`match_uuids`), else through ``CUDA_VISIBLE_DEVICES``
(integer indices, GPU UUIDs or unique UUID prefixes, as CUDA accepts them;
:func:`resolve_nvml_indices`). The index mapping assumes CUDA enumerates the visible devices in
PCI bus order, as NVML does: always true for identical GPUs, and for mixed GPUs when
``CUDA_DEVICE_ORDER=PCI_BUS_ID`` is set (CUDA's default order is "fastest first").
"""

from __future__ import annotations

from collections.abc import Sequence


class NvmlUnavailableError(RuntimeError):
    """NVML cannot measure the requested GPUs.

    Args:
        reason: A human-readable reason ("NVML library not found (no NVIDIA driver)", ...).

    Attributes:
        reason: The same reason.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_MIG = -1


def _visible_nvml_indices(visible_devices: str | None, nvml_uuids: Sequence[str]) -> list[int]:
    """NVML index of each CUDA-visible device in CUDA order; ``_MIG`` marks a MIG instance.

    Follows CUDA: the list ends at the first entry that names no device (an invalid index, an
    unknown or ambiguous UUID prefix, a repeated device, an empty entry).
    """
    count = len(nvml_uuids)
    if visible_devices is None:
        return list(range(count))
    out: list[int] = []
    upper_uuids = [uuid.upper() for uuid in nvml_uuids]
    for raw in visible_devices.split(","):
        entry = raw.strip()
        upper = entry.upper()
        if upper.startswith("MIG-"):
            out.append(_MIG)
            continue
        if entry.isdigit():
            index = int(entry)
        elif upper.startswith("GPU-") and len(upper) > len("GPU-"):
            matches = [i for i, uuid in enumerate(upper_uuids) if uuid.startswith(upper)]
            if len(matches) != 1:
                break
            index = matches[0]
        else:
            break
        if index >= count or index in out:
            break
        out.append(index)
    return out


def resolve_nvml_indices(
    cuda_indices: Sequence[int],
    visible_devices: str | None,
    nvml_uuids: Sequence[str],
) -> list[int]:
    """Map torch CUDA device indices to NVML device indices.

    Args:
        cuda_indices: Torch CUDA indices (``torch.device("cuda", i)``) used by this process.
        visible_devices: The value of ``CUDA_VISIBLE_DEVICES``; None when unset (every device
            visible, CUDA index = NVML index). An empty string hides every device.
        nvml_uuids: The UUID of every NVML device, by NVML index (``"GPU-..."``); its length
            is the NVML device count.

    Returns:
        The NVML index of each entry of ``cuda_indices``, in the same order.

    Raises:
        NvmlUnavailableError: If an index is not visible (out of range, or past an entry CUDA
            would reject) or is a MIG instance.

    Example:
        >>> resolve_nvml_indices([0, 1], "2,3", ["GPU-a", "GPU-b", "GPU-c", "GPU-d"])
        [2, 3]
        >>> resolve_nvml_indices([0], "GPU-d", ["GPU-a", "GPU-b", "GPU-c", "GPU-d"])
        [3]
    """
    visible = _visible_nvml_indices(visible_devices, nvml_uuids)
    shown = "unset" if visible_devices is None else repr(visible_devices)
    out: list[int] = []
    for cuda_index in cuda_indices:
        if not 0 <= cuda_index < len(visible):
            raise NvmlUnavailableError(
                f"CUDA device {cuda_index} not found: NVML sees {len(nvml_uuids)} GPU(s) and "
                f"CUDA_VISIBLE_DEVICES ({shown}) exposes {len(visible)}"
            )
        if visible[cuda_index] == _MIG:
            raise NvmlUnavailableError(
                f"CUDA device {cuda_index} is a MIG instance: NVML cannot attribute its energy "
                "(no counter per instance; the GPU's counter includes the other instances)"
            )
        out.append(visible[cuda_index])
    return out


def match_uuids(
    cuda_indices: Sequence[int], cuda_uuids: Sequence[str | None], nvml_uuids: Sequence[str]
) -> dict[int, int]:
    """NVML indices of the CUDA devices whose UUID torch reported, matched exactly.

    CUDA orders devices fastest first unless ``CUDA_DEVICE_ORDER=PCI_BUS_ID``, NVML by PCI bus:
    on a box with mixed GPU models an index mapping can pick the wrong GPU; a UUID cannot.

    Args:
        cuda_indices: Torch CUDA indices.
        cuda_uuids: Torch's UUID of each (``str(torch.cuda.get_device_properties(i).uuid)``, with
            or without the ``GPU-`` prefix), None where unknown.
        nvml_uuids: The UUID of every NVML device, by NVML index.

    Returns:
        ``{cuda_index: nvml_index}`` for the devices matched; the others are left to
        :func:`resolve_nvml_indices`.

    Example:
        >>> match_uuids([0, 1], ["c-3", None], ["GPU-a-1", "GPU-b-2", "GPU-c-3"])
        {0: 2}
    """
    by_uuid = {u.lower(): i for i, u in enumerate(nvml_uuids) if u}
    out: dict[int, int] = {}
    for cuda_index, uuid in zip(cuda_indices, cuda_uuids, strict=False):
        if not uuid:
            continue
        key = uuid.lower() if uuid.lower().startswith(("gpu-", "mig-")) else f"gpu-{uuid.lower()}"
        if key in by_uuid:
            out[int(cuda_index)] = by_uuid[key]
    return out
