"""``from edgeattn.export import export, ExportOptions``: the export API where the README shows it. The code is
in ``edgeattn.convert.export`` (see docs/design.md for the folders)."""

from edgeattn.convert.export import ExportOptions, ExportResult, export

__all__ = ["ExportOptions", "ExportResult", "export"]
