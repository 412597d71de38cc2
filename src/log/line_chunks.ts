/**
 * Log lines encoded at once into 64 KiB chunks, for the sinks that write them later.
 *
 * Encoding at once keeps no line alive as a string until the write: a queue of strings outlives
 * V8's young generation under load, and the promoted strings cost a major collection per chunk.
 * Measured on the 1 KiB benchmark with the access log on: about 2 µs of CPU per request.
 *
 * @module
 */
import { concatBytes } from "../http/bytes.ts";

/** Bytes per chunk; a full chunk is the sinks' cue to write without waiting for their timer. */
export const CHUNK_BYTES = 64 * 1024;

/** Lines waiting to be written, as UTF-8. */
export class LineChunks {
  #sealed: Uint8Array[] = [];
  #chunk = new Uint8Array(CHUNK_BYTES);
  #used = 0;
  readonly #encoder = new TextEncoder();

  /** Nothing is waiting. */
  get empty(): boolean {
    return this.#used === 0 && this.#sealed.length === 0;
  }

  /** Adds `line`; true when a chunk filled up, so the owner should start a write. */
  add(line: string): boolean {
    // A UTF-16 unit takes at most 3 bytes in UTF-8.
    if (CHUNK_BYTES - this.#used >= line.length * 3) {
      this.#used += this.#encoder.encodeInto(line, this.#chunk.subarray(this.#used)).written;
      return false;
    }
    this.#seal();
    if (line.length * 3 > CHUNK_BYTES) this.#sealed.push(this.#encoder.encode(line));
    else this.#used = this.#encoder.encodeInto(line, this.#chunk).written;
    return true;
  }

  /** Everything waiting, in order, as one array (empty when nothing is); the buffer is emptied. */
  take(): Uint8Array {
    this.#seal();
    const parts = this.#sealed;
    this.#sealed = [];
    return concatBytes(parts);
  }

  #seal() {
    if (this.#used === 0) return;
    this.#sealed.push(this.#chunk.subarray(0, this.#used));
    this.#chunk = new Uint8Array(CHUNK_BYTES);
    this.#used = 0;
  }
}
