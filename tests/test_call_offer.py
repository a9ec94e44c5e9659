"""The WebRTC offer's checks, without HTTP: what a client that sends a bad offer is told."""

from __future__ import annotations

import pytest

from voxline.stream.webrtc.call import bundle_problem
from voxline.stream.webrtc.calls import MAX_SYSTEM_PROMPT_CHARS, CallOffer, CallRefused

SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
AUDIO = "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\n"
DATA = "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n"


def refusal(body: object) -> CallRefused:
    with pytest.raises(CallRefused) as caught:
        CallOffer.parse(body)
    assert caught.value.status == 400 and caught.value.code == "bad_offer"
    return caught.value


def test_a_good_offer_keeps_its_sdp_and_options() -> None:
    offer = CallOffer.parse({"sdp": SDP + AUDIO, "type": "offer", "session": {"echo_cancel": False, "system_prompt": "Be brief."}})
    assert (offer.sdp, offer.mode, offer.echo_cancel, offer.system_prompt) == (SDP + AUDIO, "agent", False, "Be brief.")
    assert CallOffer.parse({"sdp": SDP, "type": "offer", "session": {"mode": "voice_changer", "vc": {"preset": "deeper"}}}).vc == {"preset": "deeper"}


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ([1, 2], "JSON object"),
        ({"type": "offer"}, "'sdp'"),
        ({"sdp": "  ", "type": "offer"}, "'sdp'"),
        ({"sdp": SDP, "type": "answer"}, "'type' must be 'offer'"),
        ({"sdp": SDP, "type": "offer", "session": "agent"}, "'session' must be an object"),
        ({"sdp": SDP, "type": "offer", "session": {"voice": "x"}}, "unknown session option(s) ['voice']"),
        ({"sdp": SDP, "type": "offer", "session": {"echo_cancel": "yes"}}, "echo_cancel must be true or false"),
        ({"sdp": SDP, "type": "offer", "session": {"system_prompt": "x" * (MAX_SYSTEM_PROMPT_CHARS + 1)}}, "system_prompt"),
        ({"sdp": SDP, "type": "offer", "session": {"mode": "karaoke"}}, "session.mode must be one of"),
        ({"sdp": SDP, "type": "offer", "session": {"vc": {"preset": "deeper"}}}, "for mode 'voice_changer'"),
        ({"sdp": SDP, "type": "offer", "session": {"mode": "voice_changer", "vc": {"semitones": 99}}}, "session.vc:"),
    ],
)
def test_a_bad_offer_is_refused_with_what_is_wrong(body: object, says: str) -> None:
    assert says in refusal(body).message


def test_an_offer_whose_bundle_names_a_missing_section_is_caught_before_aiortc_sees_it() -> None:
    bundled = SDP + "a=group:BUNDLE 0 1\r\n"
    assert bundle_problem(SDP + AUDIO) == ""
    assert bundle_problem(bundled + AUDIO + "a=mid:0\r\n" + DATA + "a=mid:1\r\n") == ""
    assert "names 1, which no media section has" in bundle_problem(bundled + AUDIO + "a=mid:0\r\n")
    assert "exactly one a=mid" in bundle_problem(bundled + AUDIO + "a=mid:0\r\n" + DATA)
    assert "outside any media section" in bundle_problem(bundled + "a=mid:0\r\n" + AUDIO + "a=mid:0\r\n")
