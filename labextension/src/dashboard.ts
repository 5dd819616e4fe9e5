/**
 * A dashboard panel as a main-area tab: an iframe on the panel's page, reached through the
 * server extension's proxy so it works under any `base_url` and needs no open port.
 */
import { JupyterFrontEnd } from '@jupyterlab/application';
import { IFrame, MainAreaWidget } from '@jupyterlab/apputils';

import { ICluster, IPanel, panelUrl } from './api';

export type DashboardTab = MainAreaWidget<IFrame>;

/** A new tab showing `panel` of `cluster`. */
export function dashboardTab(cluster: ICluster, panel: IPanel): DashboardTab {
  const content = new IFrame({
    // Bokeh needs its scripts and its own origin's websocket; nothing else is allowed.
    sandbox: ['allow-scripts', 'allow-same-origin'],
    referrerPolicy: 'same-origin'
  });
  content.url = panelUrl(cluster, panel);
  const tab = new MainAreaWidget({ content });
  tab.id = dashboardTabId(cluster.id, panel.name);
  tab.title.label = `${panel.title} (${cluster.id})`;
  tab.title.closable = true;
  tab.addClass('sj-DashboardTab');
  tab.node.dataset.clusterId = cluster.id;
  return tab;
}

/**
 * Close the dashboard tabs of clusters that `keep` rejects: a tab on a stopped cluster would only
 * retry its websocket and fill the console with errors.
 */
export function closeDashboardTabs(
  shell: JupyterFrontEnd.IShell,
  keep: (clusterId: string) => boolean
): void {
  for (const widget of Array.from(shell.widgets('main'))) {
    const clusterId = widget.node.dataset.clusterId;
    if (
      widget.hasClass('sj-DashboardTab') &&
      clusterId !== undefined &&
      !keep(clusterId)
    ) {
      widget.dispose();
    }
  }
}

/** One tab per cluster and panel: opening it again shows the tab already open. */
export function dashboardTabId(clusterId: string, panelName: string): string {
  return `scaler-jupyter-dashboard-${clusterId}-${panelName}`;
}
