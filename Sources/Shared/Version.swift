public enum PSADVersion { public static let protocolVersion: UInt8 = 1 }
