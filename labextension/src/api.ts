/**
 * Calls to the nb_mlops server extension (`/nb-mlops/api/...`) through JupyterLab's
 * ServerConnection, which adds the token and the XSRF header.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import { IHistory, IJob, IJobList, INotebookInfo } from './models';

/** An API error carrying the server's one-line message. */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number
  ) {
    super(message);
  }
}

export async function requestAPI<T>(
  endpoint: string,
  init: RequestInit = {}
): Promise<T> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, 'nb-mlops', 'api', endpoint);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    throw new ApiError(`cannot reach the Jupyter server: ${String(error)}`, 0);
  }
  const text = await response.text();
  let data: any = {};
  if (text.length > 0) {
    try {
      data = JSON.parse(text);
    } catch {
      data = { message: text };
    }
  }
  if (!response.ok) {
    throw new ApiError(
      (data && typeof data.message === 'string' && data.message) ||
        response.statusText ||
        `HTTP ${response.status}`,
      response.status
    );
  }
  return data as T;
}

const enc = encodeURIComponent;

export function getNotebook(path: string): Promise<INotebookInfo> {
  return requestAPI<INotebookInfo>(`notebook?path=${enc(path)}`);
}

export function startJob(body: {
  path: string;
  parameters: { [name: string]: unknown };
  model: string | null;
  action: 'run' | 'promote';
}): Promise<IJob> {
  return requestAPI<IJob>('jobs', {
    method: 'POST',
    body: JSON.stringify(body)
  });
}

export function listJobs(): Promise<IJobList> {
  return requestAPI<IJobList>('jobs');
}

export function getJob(id: string): Promise<IJob> {
  return requestAPI<IJob>(`jobs/${enc(id)}`);
}

export function cancelJob(id: string): Promise<IJob> {
  return requestAPI<IJob>(`jobs/${enc(id)}/cancel`, { method: 'POST' });
}

export function getHistory(model: string): Promise<IHistory> {
  return requestAPI<IHistory>(`models/${enc(model)}/history`);
}

export function rollback(
  model: string,
  reason: string,
  version?: string
): Promise<{ [key: string]: unknown }> {
  const body: { [key: string]: unknown } = { reason };
  if (version) {
    body.version = version;
  }
  return requestAPI(`models/${enc(model)}/rollback`, {
    method: 'POST',
    body: JSON.stringify(body)
  });
}
