/**
 * The cluster list the sidebar shows, kept fresh by polling the server.
 *
 * Polling uses Lumino's `Poll`: every 2 s while things change, backing off (up to 30 s) when the
 * server fails, and standing by while the sidebar is hidden or the browser tab is in the
 * background, so an idle Lab costs the server nothing. An action (start, scale, stop) refreshes
 * at once instead of waiting for the next tick.
 */
import { Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';

import { ICluster, listClusters } from './api';

const INTERVAL = 2000;
const MAX_INTERVAL = 30000;

export class ClusterListModel {
  constructor(isVisible: () => boolean) {
    this._poll = new Poll({
      auto: true,
      factory: () => this._fetch(),
      frequency: { interval: INTERVAL, backoff: true, max: MAX_INTERVAL },
      name: 'scaler-jupyter:clusters',
      standby: () => !isVisible() || 'when-hidden'
    });
  }

  /** The clusters of the last successful poll. */
  get clusters(): ReadonlyArray<ICluster> {
    return this._clusters;
  }

  /** The last poll's error message, or null when it succeeded. */
  get error(): string | null {
    return this._error;
  }

  /** Emitted after every poll, successful or not. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** The cluster with this id, if the last poll saw it. */
  find(id: string): ICluster | undefined {
    return this._clusters.find(cluster => cluster.id === id);
  }

  /** Show a cluster as an action's answer describes it, without waiting for the next poll. */
  update(cluster: ICluster): void {
    const index = this._clusters.findIndex(known => known.id === cluster.id);
    this._clusters =
      index < 0
        ? [...this._clusters, cluster]
        : [
            ...this._clusters.slice(0, index),
            cluster,
            ...this._clusters.slice(index + 1)
          ];
    this._changed.emit();
  }

  /** Drop a cluster that an action stopped. */
  remove(id: string): void {
    this._clusters = this._clusters.filter(cluster => cluster.id !== id);
    this._changed.emit();
  }

  /** Poll now (after an action, or when the sidebar is shown again). */
  refresh(): Promise<void> {
    return this._poll.refresh();
  }

  dispose(): void {
    this._poll.dispose();
  }

  private async _fetch(): Promise<void> {
    try {
      this._clusters = await listClusters();
      this._error = null;
    } catch (error) {
      this._error = (error as Error).message;
      this._changed.emit();
      throw error; // the poll backs off
    }
    this._changed.emit();
  }

  private _clusters: ICluster[] = [];
  private _error: string | null = null;
  private _changed = new Signal<this, void>(this);
  private _poll: Poll;
}
