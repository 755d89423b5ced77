/** The service's version: reported by /v1/nodes and the OpenAPI document, and to CLIs that ask who is calling. */
export const VERSION = '0.1.0';
