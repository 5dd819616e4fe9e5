/**
 * The `scaler-jupyter:sidebar` plugin: the "Scaler" left-sidebar panel and its commands.
 */
import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { INotebookTracker } from '@jupyterlab/notebook';
import { LabIcon } from '@jupyterlab/ui-components';

import { PALETTE_COMMANDS, registerCommands } from './commands';
import { ClusterSidebar } from './sidebar';

// Three stacked nodes: a cluster of machines.
const scalerIcon = new LabIcon({
  name: 'scaler-jupyter:cluster',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24"><g class="jp-icon3" fill="#616161">' +
    '<rect x="3" y="3" width="18" height="5" rx="1"/><rect x="3" y="10" width="18" height="5" rx="1"/>' +
    '<rect x="3" y="17" width="18" height="5" rx="1"/></g></svg>'
});

export const sidebarPlugin: JupyterFrontEndPlugin<void> = {
  id: 'scaler-jupyter:sidebar',
  description:
    'A sidebar listing Scaler clusters, with commands to start, scale, stop and watch them.',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [ICommandPalette, ILayoutRestorer],
  activate: (
    app: JupyterFrontEnd,
    notebooks: INotebookTracker,
    palette: ICommandPalette | null,
    restorer: ILayoutRestorer | null
  ) => {
    const sidebar = new ClusterSidebar(app.commands);
    sidebar.title.icon = scalerIcon;
    sidebar.title.caption = 'Scaler clusters';
    registerCommands(app, sidebar.model, notebooks);
    for (const command of PALETTE_COMMANDS) {
      palette?.addItem({ command, category: 'Scaler' });
    }
    app.shell.add(sidebar, 'left', { rank: 250 });
    restorer?.add(sidebar, sidebar.id);
  }
};
