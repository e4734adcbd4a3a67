"""Reports of study results: the paper's tables (Markdown, CSV), heat maps, plots and image grids."""

from annt.report.tables import Matrix, Table, models_table, table6, table7, transfer_matrices
from annt.report.writer import write_report

__all__ = ["Matrix", "Table", "models_table", "table6", "table7", "transfer_matrices", "write_report"]
