/**
 * The JSON shapes of the nb_mlops REST API (`nb_mlops/server/handlers.py`), one interface each,
 * the checks that turn a server reply into them, and the small rules read off them (is a job
 * active, which jobs just finished, a gate's verdict, the words shown for a status).
 */
import type { TranslationBundle } from '@jupyterlab/translation';

/** Every status a job can have, in the order of its life. */
export const JOB_STATUSES = [
  'QUEUED',
  'RUNNING',
  'SUCCEEDED',
  'PROMOTED',
  'PENDING_APPROVAL',
  'BLOCKED',
  'FAILED',
  'CANCELLED'
] as const;

export type JobStatus = (typeof JOB_STATUSES)[number];

export const ACTIVE_STATUSES: ReadonlyArray<string> = ['QUEUED', 'RUNNING'];

/** One declared pipeline parameter (from the notebook's `parameters` cell). */
export interface IParameter {
  name: string;
  /** The widget family: int | float | bool | str | list | dict | any. */
  type: string;
  /** The type as declared in the notebook: `list[int]`, `float | None`, … */
  declared_type?: string;
  default: unknown;
  nullable?: boolean;
  help?: string | null;
  has_default?: boolean; // false: the parameters cell computes the default (or leaves it unset)
  computed?: string | null; // that default's code, shown as the field's placeholder
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
  action: 'run' | 'promote' | 'retrain';
  status: JobStatus;
  /** The notebook (run, promote); empty for a retrain, which runs the stored pipeline. */
  path: string;
  /** The snapshot a retrain runs on (`NAME@vN`). */
  data?: string | null;
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

/** One line of the promotion journal. */
export interface IHistoryEntry {
  [key: string]: unknown;
}

/** GET /nb-mlops/api/models/{name}/history */
export interface IHistory {
  model?: string;
  champion?: unknown;
  entries: IHistoryEntry[];
}

/** A result link of a job: an absolute URL into the MLflow UI. */
export interface IResultLink {
  kind: 'run' | 'model_version';
  url: string;
}

/** A server reply that does not have the shape this client expects. */
export class ShapeError extends Error {
  constructor(
    readonly what: string,
    readonly problem: string
  ) {
    super(`${what}: ${problem}`);
    this.name = 'ShapeError';
  }
}

type JSONObject = { [key: string]: unknown };

function isObject(value: unknown): value is JSONObject {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function requireObject(value: unknown, what: string): JSONObject {
  if (!isObject(value)) {
    throw new ShapeError(what, 'not a JSON object');
  }
  return value;
}

function requireString(data: JSONObject, key: string, what: string): string {
  const value = data[key];
  if (typeof value !== 'string' || value === '') {
    throw new ShapeError(what, `"${key}" is missing or not a string`);
  }
  return value;
}

/** A string or null; numbers (a model version sent as 3) become their text. */
function optionalText(value: unknown): string | null {
  if (typeof value === 'string') {
    return value;
  }
  return typeof value === 'number' ? String(value) : null;
}

function objectOr(value: unknown): JSONObject {
  return isObject(value) ? value : {};
}

function arrayOr(value: unknown): unknown[] {
  return Array.isArray(value) ? value : [];
}

/**
 * Check one job as the server sent it; absent collections become empty.
 *
 * @throws ShapeError when the job has no id, status, action or path.
 */
export function parseJob(value: unknown): IJob {
  const what = 'job';
  const data = requireObject(value, what);
  const id = requireString(data, 'id', what);
  const status = requireString(data, 'status', what);
  const action = requireString(data, 'action', what);
  if (action !== 'run' && action !== 'promote' && action !== 'retrain') {
    throw new ShapeError(what, `unknown action "${action}"`);
  }
  const links: { [name: string]: string } = {};
  for (const [name, link] of Object.entries(objectOr(data.links))) {
    if (typeof link === 'string') {
      links[name] = link;
    }
  }
  return {
    id,
    action,
    status: status as JobStatus,
    path:
      action === 'retrain'
        ? (optionalText(data.path) ?? '')
        : requireString(data, 'path', what),
    data: optionalText(data.data),
    pipeline: optionalText(data.pipeline) ?? '',
    model: optionalText(data.model),
    parameters: objectOr(data.parameters),
    user: optionalText(data.user) ?? '',
    created: optionalText(data.created) ?? '',
    started: optionalText(data.started),
    finished: optionalText(data.finished),
    run_id: optionalText(data.run_id),
    steps: objectOr(data.steps) as { [name: string]: IStepProgress },
    gates: arrayOr(data.gates).filter(isObject),
    model_version: optionalText(data.model_version),
    error: optionalText(data.error),
    links,
    log_tail: arrayOr(data.log_tail).map(String)
  };
}

/** Check the job list (`{"jobs": [...]}`), newest first as sent. */
export function parseJobList(value: unknown): IJobList {
  const data = requireObject(value, 'job list');
  if (!Array.isArray(data.jobs)) {
    throw new ShapeError('job list', '"jobs" is not a list');
  }
  return { jobs: data.jobs.map(parseJob) };
}

/**
 * Check what the Promote dialog needs about a notebook.
 *
 * @throws ShapeError when a parameter has no name, or the pipeline or model is missing.
 */
export function parseNotebookInfo(value: unknown): INotebookInfo {
  const what = 'notebook description';
  const data = requireObject(value, what);
  const parameters = arrayOr(data.parameters).map((item, i): IParameter => {
    const param = requireObject(item, `${what}, parameter ${i + 1}`);
    const name = requireString(param, 'name', `${what}, parameter ${i + 1}`);
    return {
      name,
      type: optionalText(param.type) ?? 'any',
      declared_type: optionalText(param.declared_type) ?? undefined,
      default: param.default ?? null,
      nullable: param.nullable === true,
      help: optionalText(param.help),
      has_default: param.has_default !== false,
      computed: optionalText(param.computed)
    };
  });
  return {
    path: optionalText(data.path) ?? '',
    pipeline: requireString(data, 'pipeline', what),
    model: requireString(data, 'model', what),
    steps: arrayOr(data.steps).filter(isObject) as unknown as IStep[],
    parameters,
    champion: isObject(data.champion)
      ? (data.champion as unknown as IChampion)
      : null,
    gates: arrayOr(data.gates).filter(isObject) as unknown as IGatePreview[],
    runs: arrayOr(data.runs).filter(isObject) as unknown as ITrackedRun[],
    ui_url: optionalText(data.ui_url) ?? '',
    warnings: arrayOr(data.warnings).map(String),
    config_errors: arrayOr(data.config_errors).map(String)
  };
}

/** Check a model's history; a reply without entries has an empty journal. */
export function parseHistory(value: unknown): IHistory {
  const data = requireObject(value, 'model history');
  return {
    model: optionalText(data.model) ?? undefined,
    champion: data.champion,
    entries: arrayOr(data.entries).filter(isObject)
  };
}

/** True while the job (or step) still runs or waits to run. */
export function isActive(status: string): boolean {
  return ACTIVE_STATUSES.includes(status);
}

/** True when any job is queued or running (the panel then polls fast). */
export function anyActive(jobs: ReadonlyArray<IJob>): boolean {
  return jobs.some(job => isActive(job.status));
}

/** Ids of the jobs that were active in `before` and are finished in `after`. */
export function justFinished(
  before: ReadonlyArray<IJob>,
  after: ReadonlyArray<IJob>
): string[] {
  const now = new Map(after.map(job => [job.id, job.status]));
  return before
    .filter(job => isActive(job.status))
    .filter(job => {
      const status = now.get(job.id);
      return status !== undefined && !isActive(status);
    })
    .map(job => job.id);
}

/** The jobs worth a detailed GET (step progress, log tail): active ones and the newest. */
export function needsDetail(jobs: ReadonlyArray<IJob>): Set<string> {
  const ids = new Set(
    jobs.filter(job => isActive(job.status)).map(job => job.id)
  );
  if (jobs.length > 0) {
    ids.add(jobs[0].id);
  }
  return ids;
}

/** A gate's verdict word; old results carried `passed` instead. */
export function gateVerdict(gate: IGateResult): string {
  if (gate.verdict !== undefined && gate.verdict !== null) {
    return String(gate.verdict);
  }
  return gate.passed === false ? 'FAIL' : 'PASS';
}

/** The version of a champion given as `{version: …}` or as the version itself. */
export function championVersion(champion: unknown): unknown {
  if (isObject(champion) && 'version' in champion) {
    return champion.version;
  }
  return champion;
}

/** The newest journal lines first, at most `limit`. */
export function recentEntries(history: IHistory, limit = 30): IHistoryEntry[] {
  return history.entries.slice().reverse().slice(0, limit);
}

/**
 * The job's result links as absolute URLs of the MLflow UI at `uiUrl`.
 *
 * Only fragments of the UI (`#/runs/…`) are accepted, so a link can only point there.
 */
export function resultLinks(job: IJob, uiUrl: string): IResultLink[] {
  if (!uiUrl || !job.links) {
    return [];
  }
  const base = uiUrl.replace(/\/$/, '');
  return Object.entries(job.links)
    .filter(([, fragment]) => fragment.startsWith('#/'))
    .map(([name, fragment]) => ({
      kind: name === 'run' ? 'run' : 'model_version',
      url: `${base}/${fragment}`
    }));
}

/**
 * The word shown for a job, step or gate status, translated; unknown words are shown as sent.
 *
 * Every known word is a literal here so that translation catalogs can find it.
 */
export function statusWord(status: string, trans: TranslationBundle): string {
  switch (status) {
    case 'PENDING':
      return trans.__('PENDING');
    case 'QUEUED':
      return trans.__('QUEUED');
    case 'RUNNING':
      return trans.__('RUNNING');
    case 'SUCCEEDED':
      return trans.__('SUCCEEDED');
    case 'PROMOTED':
      return trans.__('PROMOTED');
    case 'PENDING_APPROVAL':
      return trans.__('PENDING_APPROVAL');
    case 'BLOCKED':
      return trans.__('BLOCKED');
    case 'FAILED':
      return trans.__('FAILED');
    case 'CANCELLED':
      return trans.__('CANCELLED');
    case 'SKIPPED':
      return trans.__('SKIPPED');
    case 'PASS':
      return trans.__('PASS');
    case 'FAIL':
      return trans.__('FAIL');
    case 'SKIP':
      return trans.__('SKIP');
    default:
      return status;
  }
}

/** The verb shown for a job's action. */
export function actionWord(action: string, trans: TranslationBundle): string {
  switch (action) {
    case 'promote':
      return trans.__('promote');
    case 'run':
      return trans.__('run');
    case 'retrain':
      return trans.__('retrain');
    default:
      return action;
  }
}

/** A CSS class fragment for a status word: `nbm-status-promoted`. */
export function statusClass(status: string): string {
  return status.toLowerCase().replace(/[^a-z0-9-]/g, '-');
}
