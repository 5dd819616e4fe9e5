/**
 * The REST client of the server extension: `{base_url}scaler-jupyter/api/clusters[/{id}]`.
 *
 * The types below are the contract the server answers with; every request goes through
 * `ServerConnection.makeRequest`, which adds the token and XSRF headers, so the sidebar
 * works under any `base_url` and behind JupyterHub.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** One panel the cluster's dashboard serves. */
export interface IPanel {
  name: string;
  title: string;
  path: string;
}

/** One worker as the cluster's monitor feed last saw it. */
export interface IWorker {
  name: string;
  cpu: number;
  memory: number;
  queued: number;
  running: number;
}

/** A kernel that is a client of the cluster's scheduler. */
export interface IKernel {
  id?: string;
  name?: string;
  path?: string;
  pid?: number;
}

/** A recorded cluster, as the server extension describes it. */
export interface ICluster {
  id: string;
  address: string;
  dashboard: { url: string; panels: IPanel[] } | null;
  n_workers: number;
  workers: IWorker[];
  tasks: { [state: string]: number };
  kernels: IKernel[];
  started: number;
  owner_pid: number;
}

/** What a new cluster is asked for. */
export interface INewCluster {
  n_workers: number;
  tags: string[];
}

const NAMESPACE = 'scaler-jupyter/api/clusters';

/** The server's settings: base URL, token and XSRF handling. */
export const serverSettings = ServerConnection.makeSettings();

async function request<T>(path: string, init: RequestInit = {}): Promise<T> {
  const url = URLExt.join(serverSettings.baseUrl, NAMESPACE, path);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, serverSettings);
  } catch (error) {
    throw new ServerConnection.NetworkError(error as TypeError);
  }
  if (response.status === 204) {
    return undefined as T;
  }
  const text = await response.text();
  const body = text ? JSON.parse(text) : {};
  if (!response.ok) {
    // The server's errors are one-line JSON messages: show that line, not the status.
    throw new ServerConnection.ResponseError(response, body.message || text);
  }
  return body as T;
}

/** Every recorded cluster, oldest first. */
export async function listClusters(): Promise<ICluster[]> {
  const body = await request<{ clusters: ICluster[] }>('');
  return body.clusters;
}

/** Start a detached cluster; resolves once the server has recorded it. */
export function startCluster(spec: INewCluster): Promise<ICluster> {
  return request<ICluster>('', { method: 'POST', body: JSON.stringify(spec) });
}

/** Ask a cluster for `nWorkers` workers. */
export function scaleCluster(id: string, nWorkers: number): Promise<ICluster> {
  return request<ICluster>(encodeURIComponent(id), {
    method: 'PATCH',
    body: JSON.stringify({ n_workers: nWorkers })
  });
}

/** Stop a cluster and every process it started. */
export function stopCluster(id: string): Promise<void> {
  return request<void>(encodeURIComponent(id), { method: 'DELETE' });
}

/** The URL of one of a cluster's dashboard panels, through the server's proxy. */
export function panelUrl(cluster: ICluster, panel: IPanel): string {
  const base = cluster.dashboard
    ? cluster.dashboard.url
    : URLExt.join(
        serverSettings.baseUrl,
        'scaler-jupyter/dashboard',
        cluster.id,
        '/'
      );
  return URLExt.join(base, panel.path);
}

/** The code that connects a notebook to a cluster. */
export function connectCode(cluster: ICluster): string {
  return `from scaler_jupyter import Client; client = Client("${cluster.address}")`;
}
