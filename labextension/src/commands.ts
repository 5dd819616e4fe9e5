/**
 * The extension's commands, registered once: the sidebar's buttons and the command palette run
 * these, so each action has one implementation.
 *
 * None of them runs code in a kernel: "insert connect code" only writes a cell, which the user runs.
 */
import { JupyterFrontEnd } from '@jupyterlab/application';
import {
  Dialog,
  InputDialog,
  showDialog,
  showErrorMessage
} from '@jupyterlab/apputils';
import { INotebookTracker, NotebookActions } from '@jupyterlab/notebook';
import { Widget } from '@lumino/widgets';

import {
  connectCode,
  INewCluster,
  scaleCluster,
  startCluster,
  stopCluster
} from './api';
import { closeDashboardTabs, dashboardTab, dashboardTabId } from './dashboard';
import { ClusterListModel } from './model';

export const CommandIDs = {
  newCluster: 'scaler-jupyter:new-cluster',
  scaleCluster: 'scaler-jupyter:scale-cluster',
  stopCluster: 'scaler-jupyter:stop-cluster',
  openPanel: 'scaler-jupyter:open-panel',
  insertConnectCode: 'scaler-jupyter:insert-connect-code',
  refresh: 'scaler-jupyter:refresh'
} as const;

/** The palette shows the commands that need no cluster argument. */
export const PALETTE_COMMANDS = [CommandIDs.newCluster, CommandIDs.refresh];

const MAX_WORKERS = 256;

/** The "New cluster" dialog's body: a worker count and comma-separated tags. */
class NewClusterBody extends Widget implements Dialog.IBodyWidget<INewCluster> {
  constructor() {
    super();
    this.addClass('sj-NewClusterDialog');
    this.node.innerHTML =
      '<label>Workers <input class="jp-mod-styled sj-Workers-input" type="number" min="1" value="2"></label>' +
      '<label>Tags <input class="jp-mod-styled sj-Tags-input" type="text" placeholder="gpu, highmem"></label>';
  }

  getValue(): INewCluster {
    const workers = this.node.querySelector(
      '.sj-Workers-input'
    ) as HTMLInputElement;
    const tags = this.node.querySelector('.sj-Tags-input') as HTMLInputElement;
    return {
      n_workers: Number(workers.value),
      tags: tags.value
        .split(',')
        .map(tag => tag.trim())
        .filter(tag => tag.length > 0)
    };
  }
}

function validWorkers(n: number | null): n is number {
  return n !== null && Number.isInteger(n) && n >= 1 && n <= MAX_WORKERS;
}

export function registerCommands(
  app: JupyterFrontEnd,
  model: ClusterListModel,
  notebooks: INotebookTracker
): void {
  const { commands, shell } = app;
  const clusterOf = (args: { id?: unknown }) => model.find(String(args.id));

  // Each action shows its answer at once (the server's answer describes the cluster), reports a failure in
  // a dialog with the server's one-line message, then polls for the rest.
  const act = async (
    title: string,
    action: () => Promise<void>
  ): Promise<void> => {
    try {
      await action();
    } catch (error) {
      await showErrorMessage(title, (error as Error).message);
    }
    await model.refresh();
  };

  // A cluster stopped elsewhere (a notebook, the command line) takes its tabs with it.
  model.changed.connect(() => {
    if (model.error === null) {
      closeDashboardTabs(shell, id => model.find(id) !== undefined);
    }
  });

  commands.addCommand(CommandIDs.newCluster, {
    label: 'Scaler: New Cluster',
    caption: 'Start a local cluster that outlives this server',
    execute: async () => {
      const result = await showDialog({
        title: 'New Scaler cluster',
        body: new NewClusterBody(),
        buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Start' })]
      });
      if (!result.button.accept || !result.value) {
        return;
      }
      const spec = result.value;
      if (!validWorkers(spec.n_workers)) {
        await showErrorMessage(
          'New cluster',
          `Workers must be a whole number from 1 to ${MAX_WORKERS}.`
        );
        return;
      }
      await act('Cannot start the cluster', async () =>
        model.update(await startCluster(spec))
      );
    }
  });

  commands.addCommand(CommandIDs.scaleCluster, {
    label: 'Scale Cluster',
    isEnabled: args => clusterOf(args) !== undefined,
    execute: async args => {
      const cluster = clusterOf(args);
      if (!cluster) {
        return;
      }
      const result = await InputDialog.getNumber({
        title: `Scale cluster ${cluster.id}`,
        label: 'Workers',
        value: cluster.n_workers
      });
      if (!result.button.accept) {
        return;
      }
      if (!validWorkers(result.value)) {
        await showErrorMessage(
          'Scale cluster',
          `Workers must be a whole number from 1 to ${MAX_WORKERS}.`
        );
        return;
      }
      const n = result.value;
      await act('Cannot scale the cluster', async () =>
        model.update(await scaleCluster(cluster.id, n))
      );
    }
  });

  commands.addCommand(CommandIDs.stopCluster, {
    label: 'Stop Cluster',
    isEnabled: args => clusterOf(args) !== undefined,
    execute: async args => {
      const cluster = clusterOf(args);
      if (cluster) {
        closeDashboardTabs(shell, id => id !== cluster.id);
        await act('Cannot stop the cluster', async () => {
          await stopCluster(cluster.id);
          model.remove(cluster.id);
        });
      }
    }
  });

  commands.addCommand(CommandIDs.openPanel, {
    label: args => `Open Dashboard Panel ${args.panel ?? ''}`,
    isEnabled: args => clusterOf(args)?.dashboard !== null,
    execute: args => {
      const cluster = clusterOf(args);
      const panel = cluster?.dashboard?.panels.find(p => p.name === args.panel);
      if (!cluster || !panel) {
        return;
      }
      const open = Array.from(shell.widgets('main')).find(
        w => w.id === dashboardTabId(cluster.id, panel.name)
      );
      if (open) {
        shell.activateById(open.id);
        return;
      }
      shell.add(dashboardTab(cluster, panel), 'main', { mode: 'split-right' });
    }
  });

  commands.addCommand(CommandIDs.insertConnectCode, {
    label: 'Insert Connect Code',
    caption: 'Insert a cell that connects the active notebook to this cluster',
    isEnabled: args =>
      clusterOf(args) !== undefined && notebooks.currentWidget !== null,
    execute: async args => {
      const cluster = clusterOf(args);
      const panel = notebooks.currentWidget;
      if (!cluster || !panel) {
        return;
      }
      const notebook = panel.content;
      NotebookActions.insertBelow(notebook);
      notebook.activeCell?.model.sharedModel.setSource(connectCode(cluster));
      shell.activateById(panel.id);
    }
  });

  commands.addCommand(CommandIDs.refresh, {
    label: 'Scaler: Refresh Cluster List',
    execute: () => model.refresh()
  });
}
