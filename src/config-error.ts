/** A setting that stops start-up: the message names the variable (and, for a file, the file and the JSON path). */
export class ConfigError extends Error {
  constructor(variable: string, message: string) {
    super(`${variable}: ${message}`);
    this.name = 'ConfigError';
  }
}
