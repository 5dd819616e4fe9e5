/**
 * A dashboard panel as a main-area tab: an iframe on the panel's page, reached through the
 * server extension's proxy so it works under any `base_url` and needs no open port.
 */
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
  return tab;
}

/** One tab per cluster and panel: opening it again shows the tab already open. */
export function dashboardTabId(clusterId: string, panelName: string): string {
  return `scaler-jupyter-dashboard-${clusterId}-${panelName}`;
}
