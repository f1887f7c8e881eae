/**
 * The JSON shapes of the nb_mlops REST API (`nb_mlops/server/handlers.py`), one interface each.
 */

export type JobStatus =
  | 'QUEUED'
  | 'RUNNING'
  | 'SUCCEEDED'
  | 'PROMOTED'
  | 'BLOCKED'
  | 'FAILED'
  | 'CANCELLED';

export const ACTIVE_STATUSES: ReadonlyArray<string> = ['QUEUED', 'RUNNING'];

/** One declared pipeline parameter (from the notebook's `parameters` cell). */
export interface IParameter {
  name: string;
  type: string; // int | float | bool | str | list | dict | any | none
  default: unknown;
  nullable?: boolean;
  help?: string | null;
}

export interface IStep {
  name: string;
  after: string[];
}

/** A configured gate with what the champion measured (preview). */
export interface IGatePreview {
  gate: string;
  expected: string;
  champion?: unknown;
  detail?: string;
}

export interface IChampion {
  version: string;
  run_id: string | null;
  metrics: { [name: string]: number };
}

export interface ITrackedRun {
  run_id: string;
  run_name: string | null;
  status: string;
  start_time: number | null;
  mode: string | null;
  metrics: { [name: string]: number };
}

/** GET /nb-mlops/api/notebook?path=P */
export interface INotebookInfo {
  path: string;
  pipeline: string;
  model: string;
  steps: IStep[];
  parameters: IParameter[];
  champion: IChampion | null;
  gates: IGatePreview[];
  runs: ITrackedRun[];
  ui_url: string;
  warnings: string[];
  /** Configuration problems, one line each: promotion refuses while there is any. */
  config_errors?: string[];
}

export interface IStepProgress {
  status?: string;
  duration?: number | null;
  cell?: number | string | null;
  cached?: boolean;
  error?: string | null;
}

/** One gate result (nb_mlops.core.promotion.gates.GateResult.as_dict). */
export interface IGateResult {
  gate?: string;
  verdict?: string;
  measured?: unknown;
  expected?: unknown;
  detail?: string;
  [key: string]: unknown;
}

/** GET /nb-mlops/api/jobs/{id} */
export interface IJob {
  id: string;
  action: 'run' | 'promote';
  status: JobStatus;
  path: string;
  pipeline: string;
  model: string | null;
  parameters: { [name: string]: unknown };
  user: string;
  created: string;
  started: string | null;
  finished: string | null;
  run_id: string | null;
  steps: { [name: string]: IStepProgress };
  gates: IGateResult[];
  model_version: string | null;
  error: string | null;
  links?: { [name: string]: string };
  log_tail?: string[];
}

export interface IJobList {
  jobs: IJob[];
}

/** GET /nb-mlops/api/models/{name}/history: whatever `nb-mlops history --json` prints. */
export interface IHistory {
  model?: string;
  champion?: unknown;
  entries?: Array<{ [key: string]: unknown }>;
  [key: string]: unknown;
}
