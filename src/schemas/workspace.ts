import { Type, type Static } from '@sinclair/typebox';

/** The vocabulary of session workspaces over the API: where a session's files come from, a folder's listing, the diff of a run. */

export const WorkspaceSpec = Type.Union(
  [
    Type.Object(
      {
        git: Type.Object(
          {
            url: Type.String({ minLength: 1, maxLength: 2048, description: 'Cloned where the session\'s runs execute (for a remote_node session, on its worker); the schemes allowed are that process\'s ASM_WORKSPACE_GIT_SCHEMES (https by default)' }),
            ref: Type.Optional(Type.String({ minLength: 1, maxLength: 256, pattern: '^[A-Za-z0-9][A-Za-z0-9._/-]*$', description: 'A branch, tag or commit; the remote\'s HEAD by default' })),
          },
          { additionalProperties: false },
        ),
      },
      { additionalProperties: false },
    ),
    Type.Object({ archive_upload: Type.Literal(true, { description: 'An empty workspace of its own, to be filled with POST /v1/sessions/{id}/files' }) }, { additionalProperties: false }),
  ],
  {
    description:
      'A workspace of the session\'s own, a folder named after the session inside the tenant\'s workspace root (instead of `cwd`); for a remote_node session, made on the worker driver_opts.remote_node names, whose path becomes driver_opts.remote_cwd',
  },
);
export type WorkspaceSpec = Static<typeof WorkspaceSpec>;

export const DiffFile = Type.Object({
  path: Type.String(),
  status: Type.Union([Type.Literal('added'), Type.Literal('modified'), Type.Literal('deleted'), Type.Literal('type_changed')]),
  additions: Type.Union([Type.Integer({ minimum: 0 }), Type.Null()], { description: 'Lines added; null for a binary file' }),
  deletions: Type.Union([Type.Integer({ minimum: 0 }), Type.Null()]),
  binary: Type.Boolean(),
});
export type DiffFile = Static<typeof DiffFile>;

export const DiffSummary = Type.Object(
  {
    files: Type.Array(DiffFile, { description: 'At most ASM_DIFF_MAX_FILES' }),
    files_truncated: Type.Boolean(),
    changed_files: Type.Integer({ minimum: 0 }),
    additions: Type.Integer({ minimum: 0 }),
    deletions: Type.Integer({ minimum: 0 }),
  },
  { $id: 'DiffSummary' },
);
export type DiffSummary = Static<typeof DiffSummary>;

/** What is kept of a diff: the summary, and the patch where it fit ASM_DIFF_MAX_BYTES. */
export interface StoredDiff {
  summary: DiffSummary;
  patch: string | null;
  /** When it was computed (the end of the run it describes). */
  computed_at: string;
  /** The trees it compares, in the session's shadow repository (src/backends/shadow-git.ts); never answered. Absent in diffs stored before it was kept. */
  trees?: { from: string; to: string };
}

export const DiffResponse = Type.Object({
  summary: Type.Ref(DiffSummary),
  patch_truncated: Type.Boolean({ description: 'The patch exceeded ASM_DIFF_MAX_BYTES and was not kept; `Accept: text/x-diff` then answers 413' }),
  computed_at: Type.String({ format: 'date-time' }),
});

export const FileEntry = Type.Object({
  name: Type.String(),
  type: Type.Union([Type.Literal('file'), Type.Literal('directory'), Type.Literal('symlink'), Type.Literal('other')]),
  size: Type.Integer({ minimum: 0 }),
  modified_at: Type.String({ format: 'date-time' }),
});
export type FileEntry = Static<typeof FileEntry>;

export const FileListing = Type.Object({
  path: Type.String({ description: 'The folder listed, relative to the workspace' }),
  entries: Type.Array(FileEntry, { description: 'By name' }),
  next_cursor: Type.Union([Type.String(), Type.Null()]),
});

export const FilesQuery = Type.Object(
  {
    path: Type.Optional(Type.String({ maxLength: 4096, description: 'A folder relative to the workspace; the workspace itself by default' })),
    limit: Type.Optional(Type.Integer({ minimum: 1 })),
    cursor: Type.Optional(Type.String({ maxLength: 2048 })),
  },
  { additionalProperties: false },
);

export const UploadResult = Type.Object({
  files: Type.Integer({ minimum: 0, description: 'Files written' }),
  directories: Type.Integer({ minimum: 0 }),
  bytes: Type.Integer({ minimum: 0 }),
});
export type UploadResult = Static<typeof UploadResult>;
