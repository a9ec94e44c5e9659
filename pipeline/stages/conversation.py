"""The conversation stage: the last stage of an agent's listening graph.

It hands every frame to the session's ``VoiceAgent`` (audio for timing, VAD control
frames, transcripts) and forwards nothing: what the client sees comes out as the
agent's events, what it hears comes out of ``VoiceAgent.pull``. Closing the stage
(end of stream or cancellation) closes the agent, which cancels the reply in flight.
"""

from __future__ import annotations

from ..agent.voice_agent import VoiceAgent
from ..frames import AudioFrame, ControlFrame, Frame, TranscriptFrame
from ..stage import Stage


class ConversationStage(Stage):
    """Feeds one session's ``VoiceAgent`` from the recogniser's output."""

    kind = "conversation"

    def __init__(self, agent: VoiceAgent, name: str = "conversation") -> None:
        super().__init__(name)
        self.agent = agent

    async def process(self, frame: Frame) -> None:
        """Dispatch ``frame`` to the agent by type."""
        if isinstance(frame, AudioFrame):
            await self.agent.on_audio(frame)
        elif isinstance(frame, TranscriptFrame):
            await self.agent.on_transcript(frame)
        elif isinstance(frame, ControlFrame):
            await self.agent.on_control(frame)

    async def on_close(self) -> None:
        """Cancel the agent's reply in flight; no task outlives the graph."""
        await self.agent.close()
