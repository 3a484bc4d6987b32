import type { CommandTiming } from "./driver-protocol.js";
import type { Summary } from "./stats.js";
import { summarize } from "./stats.js";

/** Where the time of a stream of back-to-back CreateVolume calls went, from the driver's command log. */
export interface CreateStream {
  /** Pool messages (create_thin of the spares) per CreateVolume. */
  messagesPerCall: number;
  /** `dmsetup status` reads per CreateVolume. */
  statusReadsPerCall: number;
  /** One pool message, from the runner's call to its result (the process's life as the driver sees it). */
  messageMs: Summary;
  /** From one pool message's result to the next one's call: the driver's own time between them. */
  gapMs: Summary;
}

export function createStream(commands: readonly CommandTiming[], calls: number): CreateStream {
  const messages = commands
    .filter((c) => c.file === "dmsetup" && c.args[0] === "message")
    .sort((a, b) => a.startMs - b.startMs);
  const gaps = messages.slice(1).map((next, i) => next.startMs - (messages[i] as CommandTiming).endMs);
  return {
    messagesPerCall: messages.length / calls,
    statusReadsPerCall: commands.filter((c) => c.file === "dmsetup" && c.args[0] === "status").length / calls,
    messageMs: summarize(messages.map((c) => c.endMs - c.startMs)),
    gapMs: summarize(gaps),
  };
}
