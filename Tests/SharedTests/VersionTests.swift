import Testing
@testable import Shared
@Test func protocolVersionIsOne() { #expect(PSADVersion.protocolVersion == 1) }
