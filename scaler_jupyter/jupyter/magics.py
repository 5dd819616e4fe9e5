"""``%scaler`` (manage clusters) and ``%%scaler`` (run a cell as a task): one name, two forms, as IPython allows."""

from __future__ import annotations

from IPython.core.magic import Magics, line_cell_magic, magics_class, no_var_expand


@magics_class
class ScalerMagics(Magics):
    """The line form manages clusters (``line_magic``); the cell form runs the cell remotely (``cell_magic``)."""

    @no_var_expand
    @line_cell_magic
    def scaler(self, line: str, cell: str | None = None):
        if cell is None:
            from scaler_jupyter.jupyter import line_magic

            return line_magic.run(self.shell, line)
        from scaler_jupyter.jupyter import cell_magic

        return cell_magic.run(self.shell, line, cell)
