/**
 * Calls to the nb_mlops server extension (`/nb-mlops/api/...`) through JupyterLab's
 * ServerConnection, which adds the token and the XSRF header; replies are checked against
 * the shapes in `models.ts` before anyone reads them.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import { ApiError } from './errors';
import {
  IHistory,
  IJob,
  IJobList,
  INotebookInfo,
  parseHistory,
  parseJob,
  parseJobList,
  parseNotebookInfo
} from './models';
import { IMonitorView, parseMonitor } from './monitorModels';

export { ApiError };

/** The server's message in an error reply, if it sent one. */
function messageOf(data: unknown): string | null {
  if (data !== null && typeof data === 'object' && 'message' in data) {
    const message = data.message;
    return typeof message === 'string' && message ? message : null;
  }
  return null;
}

/** Call `endpoint`; resolve with the JSON reply, reject with an ApiError. */
export async function requestAPI(
  endpoint: string,
  init: RequestInit = {}
): Promise<unknown> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, 'nb-mlops', 'api', endpoint);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    throw new ApiError(String(error), 0);
  }
  const text = await response.text();
  let data: unknown = {};
  if (text.length > 0) {
    try {
      data = JSON.parse(text);
    } catch {
      data = { message: text };
    }
  }
  if (!response.ok) {
    throw new ApiError(
      messageOf(data) || response.statusText || `HTTP ${response.status}`,
      response.status
    );
  }
  return data;
}

const enc = encodeURIComponent;

export async function getNotebook(path: string): Promise<INotebookInfo> {
  return parseNotebookInfo(await requestAPI(`notebook?path=${enc(path)}`));
}

export async function startJob(body: {
  path: string;
  parameters: { [name: string]: unknown };
  model: string | null;
  action: 'run' | 'promote';
}): Promise<IJob> {
  const data = await requestAPI('jobs', {
    method: 'POST',
    body: JSON.stringify(body)
  });
  return parseJob(data);
}

export async function listJobs(): Promise<IJobList> {
  return parseJobList(await requestAPI('jobs'));
}

export async function getJob(id: string): Promise<IJob> {
  return parseJob(await requestAPI(`jobs/${enc(id)}`));
}

export async function cancelJob(id: string): Promise<IJob> {
  return parseJob(
    await requestAPI(`jobs/${enc(id)}/cancel`, { method: 'POST' })
  );
}

export async function getHistory(model: string): Promise<IHistory> {
  return parseHistory(await requestAPI(`models/${enc(model)}/history`));
}

export async function rollback(
  model: string,
  reason: string,
  version?: string
): Promise<unknown> {
  const body: { [key: string]: unknown } = { reason };
  if (version) {
    body.version = version;
  }
  return requestAPI(`models/${enc(model)}/rollback`, {
    method: 'POST',
    body: JSON.stringify(body)
  });
}

export async function getMonitor(model: string): Promise<IMonitorView> {
  return parseMonitor(await requestAPI(`models/${enc(model)}/monitor`));
}

/** Start a retrain of `model`'s champion pipeline on snapshot `data` (`NAME@vN`). */
export async function retrain(
  model: string,
  data: string,
  promote: boolean
): Promise<IJob> {
  return parseJob(
    await requestAPI(`models/${enc(model)}/retrain`, {
      method: 'POST',
      body: JSON.stringify({ data, promote })
    })
  );
}
