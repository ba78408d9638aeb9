"""hw: thin adapters to physical parts.

Owns: one small class per device (camera, microphone, clock, later pins, card reader,
key token), each with a Raspberry Pi implementation and a simulated one that produces
real data (real H.264 from libx264, real PCM through PortAudio).

Must not: hold recording policy or state. A device is started with a sink callback and
hands encoded packets to it; what happens to them is the recorder's business.
"""
