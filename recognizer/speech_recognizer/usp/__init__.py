"""The Speech SDK's WebSocket protocol (USP): its frames (:mod:`.frames`), a connection and its turns
(:mod:`.connection`), the options a turn takes (:mod:`.options`) and the routes (:mod:`.routes`).

Nothing is imported here, so that the gateway, which reads frame headers (:mod:`.frames`), does
not import the recognizer's server with it (the operator image carries neither numpy nor Vosk).
"""
