/**
 * The "Scaler" sidebar: every recorded cluster with its workers (CPU bars), task totals,
 * connected kernels and buttons that run the extension's commands.
 *
 * It only draws the model and calls commands; what a button does lives in `commands.ts`, so the
 * sidebar, the palette and any menu share one implementation.
 */
import { CommandRegistry } from '@lumino/commands';
import { Message } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';

import { ICluster, IWorker } from './api';
import { CommandIDs } from './commands';
import { ClusterListModel } from './model';

function element<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className: string,
  text?: string
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  node.className = className;
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}

function megabytes(bytes: number): string {
  return bytes >= 1e9
    ? `${(bytes / 1e9).toFixed(1)} GB`
    : `${Math.round(bytes / 1e6)} MB`;
}

export class ClusterSidebar extends Widget {
  constructor(commands: CommandRegistry) {
    super();
    this._commands = commands;
    this.id = 'scaler-jupyter-sidebar';
    this.addClass('sj-Sidebar');
    this.model = new ClusterListModel(() => this.isVisible);
    this.model.changed.connect(this._render, this);

    const header = element('div', 'sj-Sidebar-header');
    header.appendChild(element('h2', 'sj-Sidebar-title', 'Scaler'));
    const start = this._button('New cluster', CommandIDs.newCluster, {});
    start.classList.add('jp-mod-accept', 'sj-NewCluster');
    header.appendChild(start);
    this.node.appendChild(header);
    this._error = element('div', 'sj-Sidebar-error');
    this.node.appendChild(this._error);
    this._list = element('ul', 'sj-ClusterList');
    this.node.appendChild(this._list);
  }

  readonly model: ClusterListModel;

  dispose(): void {
    this.model.dispose();
    super.dispose();
  }

  protected onAfterShow(msg: Message): void {
    void this.model.refresh(); // it stood by while hidden
  }

  private _render(): void {
    this._error.textContent = this.model.error
      ? `Cannot list clusters: ${this.model.error}`
      : '';
    this._list.replaceChildren(
      ...this.model.clusters.map(cluster => this._cluster(cluster))
    );
    if (!this.model.clusters.length && !this.model.error) {
      this._list.appendChild(
        element(
          'li',
          'sj-Empty',
          'No cluster yet: start one, or run %scaler start --keep.'
        )
      );
    }
  }

  private _cluster(cluster: ICluster): HTMLElement {
    const args = { id: cluster.id };
    const item = element('li', 'sj-Cluster');
    item.dataset.clusterId = cluster.id;

    const title = element('div', 'sj-Cluster-title');
    title.appendChild(element('span', 'sj-Cluster-id', cluster.id));
    title.appendChild(element('code', 'sj-Cluster-address', cluster.address));
    item.appendChild(title);

    const actions = element('div', 'sj-Cluster-actions');
    actions.appendChild(this._button('Scale', CommandIDs.scaleCluster, args));
    actions.appendChild(this._button('Stop', CommandIDs.stopCluster, args));
    actions.appendChild(
      this._button('Insert connect code', CommandIDs.insertConnectCode, args)
    );
    item.appendChild(actions);

    const workers = element('ul', 'sj-Workers');
    workers.dataset.count = String(cluster.workers.length);
    workers.appendChild(
      element(
        'li',
        'sj-Workers-title',
        `Workers: ${cluster.workers.length} of ${cluster.n_workers}`
      )
    );
    const byName = [...cluster.workers].sort((a, b) =>
      a.name.localeCompare(b.name, undefined, { numeric: true })
    );
    for (const worker of byName) {
      workers.appendChild(this._worker(worker));
    }
    item.appendChild(workers);

    const totals = Object.entries(cluster.tasks)
      .filter(([, count]) => count > 0)
      .map(([state, count]) => `${state} ${count}`);
    item.appendChild(
      element(
        'div',
        'sj-Tasks',
        `Tasks: ${totals.length ? totals.join(', ') : 'none'}`
      )
    );

    const kernels = cluster.kernels.map(
      kernel => kernel.path || kernel.name || kernel.id || `pid ${kernel.pid}`
    );
    item.appendChild(
      element(
        'div',
        'sj-Kernels',
        `Kernels: ${kernels.length ? kernels.join(', ') : 'none'}`
      )
    );

    if (cluster.dashboard && cluster.dashboard.panels.length) {
      const panels = element('div', 'sj-Panels');
      for (const panel of cluster.dashboard.panels) {
        const button = this._button(panel.title, CommandIDs.openPanel, {
          id: cluster.id,
          panel: panel.name
        });
        button.classList.add('sj-Panel');
        button.dataset.panel = panel.name;
        panels.appendChild(button);
      }
      item.appendChild(panels);
    }
    return item;
  }

  private _worker(worker: IWorker): HTMLElement {
    const row = element('li', 'sj-Worker');
    row.title = `${worker.name}: ${worker.running} running, ${worker.queued} queued, ${megabytes(worker.memory)}`;
    row.appendChild(element('span', 'sj-Worker-name', worker.name));
    const bar = element('span', 'sj-Bar');
    const fill = element('span', 'sj-Bar-fill');
    const cpu = Math.max(0, Math.min(100, worker.cpu));
    fill.style.width = `${cpu}%`;
    bar.appendChild(fill);
    row.appendChild(bar);
    row.appendChild(element('span', 'sj-Worker-cpu', `${Math.round(cpu)}%`));
    row.appendChild(
      element('span', 'sj-Worker-memory', megabytes(worker.memory))
    );
    return row;
  }

  private _button(
    label: string,
    command: string,
    args: { [key: string]: string }
  ): HTMLButtonElement {
    const button = element(
      'button',
      'jp-Button jp-mod-styled sj-Button',
      label
    );
    button.dataset.command = command;
    button.addEventListener(
      'click',
      () => void this._commands.execute(command, args)
    );
    return button;
  }

  private _commands: CommandRegistry;
  private _error: HTMLElement;
  private _list: HTMLElement;
}
