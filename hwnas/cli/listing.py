"""``hwnas devices``, ``hwnas spaces`` and ``hwnas tables``: what hwnas can see on this machine."""

from __future__ import annotations

import argparse
import json
from typing import Any

from hwnas.errors import HwnasError


def cmd_devices(args: argparse.Namespace) -> dict[str, Any]:
    from hwnas.devices import add_device, list_devices, load_device, user_devices_dir
    from hwnas.runtimes import runtime_class

    if args.action is not None and not args.target:
        raise HwnasError(f"devices {args.action}: expected {'a device file' if args.action == 'add' else 'a name'}")
    if args.action == "add":
        result = add_device(args.target, replace=getattr(args, "replace", False))
        added = result.profile
        said = {"added": "added device", "replaced": "replaced your device",
                "unchanged": "already added, the same file: nothing changed for device"}[result.action]
        return {"added": added.name, "action": result.action, "path": str(added.path), "profile": added.to_dict(),
                "_text": f"{said} {added.name} ({added.path})"}
    if getattr(args, "replace", False):
        raise HwnasError("--replace: only with `devices add FILE`")
    if args.action == "show":
        profile = load_device(args.target)
        text = "\n".join([f"# {profile.path}"] + [f"{k} = {json.dumps(v)}" for k, v in profile.to_dict().items()])
        return {"path": str(profile.path), "profile": profile.to_dict(), "_text": text}
    user = user_devices_dir().resolve()
    rows = []
    for device in list_devices():
        reason = runtime_class(device.backend).unavailable_reason(device.runtime_config())
        rows.append({"name": device.name, "backend": device.backend, "device": device.device,
                     "threads": device.threads, "precision": device.precision, "available": reason is None,
                     "unavailable_reason": reason, "description": device.description, "path": str(device.path),
                     "source": "user" if device.path and device.path.resolve().parent == user else "shipped"})
    text = "\n".join(f"{r['name']:<18} {r['backend']:<12} {r['device']:<8} {r['threads']} thr {r['precision']:<5} "
                     f"{r['source']:<7} "
                     f"{'ok' if r['available'] else 'unavailable: ' + str(r['unavailable_reason'])}" for r in rows)
    return {"devices": rows, "_text": text}


def cmd_spaces(args: argparse.Namespace) -> dict[str, Any]:
    from hwnas.spaces import get_space, space_info, space_names

    rows = []
    for name in space_names():
        info, space = space_info(name), get_space(name)
        rows.append({"name": name, "default_resolution": info.default_resolution, "resolution_multiple":
                     info.total_stride, "layers": len(space.layers), "ops": len(space.all_specs()),
                     "num_classes": info.default_num_classes, "description": info.description})
    text = "\n".join(f"{r['name']:<16} {r['layers']:>2} layers  {r['ops']:>3} ops  res {r['default_resolution']} "
                     f"(multiple of {r['resolution_multiple']})  {r['description']}" for r in rows)
    return {"spaces": rows, "_text": text}



def cmd_tables(args: argparse.Namespace) -> dict[str, Any]:
    from hwnas.latency.table import LatencyTable, foreign_table_note, table_folders

    rows, seen = [], set()
    for kind, folder in zip(("user", "shipped"), table_folders()):
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                table = LatencyTable.load(path)
            except HwnasError as exc:
                rows.append({"path": str(path), "where": kind, "error": str(exc)})
                continue
            note = foreign_table_note(table)
            rows.append({"device": table.device_name, "space": table.space, "resolution": table.resolution,
                         "num_classes": table.num_classes, "heads": table.heads, "entries": len(table.entries),
                         "noisy": len(table.noisy_keys()), "where": kind, "path": str(path),
                         "overridden": path.name in seen, "matches_this_machine": note is None,
                         "difference": note})
            seen.add(path.name)
    text = "\n".join(f"{r['path']}: unreadable ({r['error']})" if "error" in r else
                     f"{r['device']:<18} {r['space']:<15} {r['resolution']:>4} {r['entries']:>4} entries "
                     f"heads {','.join(map(str, r['heads'])) or '-':<8} "
                     f"{r['noisy']:>3} noisy  {r['where']:<7} "
                     f"{'this machine' if r['matches_this_machine'] else 'other'}"
                     f"{' (overridden)' if r['overridden'] else ''}  {r['path']}" for r in rows)
    return {"tables": rows, "_text": text or "no latency tables"}
